package modelgw

import (
	"context"
	"testing"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayAggregatesRefusedCallers: a caller refused at admission over
// and over writes one event at once and one counted aggregate; each answer
// names the event that accounts for it, and nothing reaches the upstream.
func TestGatewayAggregatesRefusedCallers(t *testing.T) {
	f := newFixture(t, fixtureOpts{aggregate: true})
	told := map[string]int64{}
	for range 12 {
		res := f.do(f.outsider, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
		b := res.errBody(t)
		if res.status != 403 || b.Reason != reason.UnknownPeer || b.AuditEvent == "" || b.Error.AuditEvent != b.AuditEvent {
			t.Fatalf("status %d body %+v", res.status, b)
		}
		told[b.AuditEvent]++
	}
	if err := f.refusals.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.rec.CheckAccounted(t, reason.UnknownPeer, told, 2)
	if got := f.up.Received(); len(got) != 0 {
		t.Fatalf("refused requests reached the upstream: %d", len(got))
	}
}

// TestGatewayRefusesARevokedRegistrationAsRevoked: a certificate of a
// registration the gateway's netmap lists as revoked is refused with
// revoked, one of a node the netmap never listed with unknown_peer.
func TestGatewayRefusesARevokedRegistrationAsRevoked(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	fraud := gatewaytest.ID(t, identity.KindAgent, "fraud")
	nm := &netmap.Netmap{TrustDomain: f.gwID.TrustDomain, Nodes: []netmap.Node{
		{ID: fraud, Name: fraud.Name, Kind: fraud.Kind, Tags: []identity.Tag{}, Status: netmap.StatusRevoked, Incarnation: "inc1"},
	}}
	f.gw.Update(admission.NewState(f.gwID, nm, f.state(basePolicy).Policy, false))
	if res := f.do(f.fraud, "GET", "/v1/models", ""); res.status != 403 || res.errBody(t).Reason != reason.Revoked {
		t.Fatalf("revoked registration: %d %s, want 403 %s", res.status, res.body, reason.Revoked)
	}
	if res := f.do(f.outsider, "GET", "/v1/models", ""); res.status != 403 || res.errBody(t).Reason != reason.UnknownPeer {
		t.Fatalf("node never known: %d %s, want 403 %s", res.status, res.body, reason.UnknownPeer)
	}
}
