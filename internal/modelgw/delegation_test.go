package modelgw

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
	"github.com/agentmesh/agentmesh/internal/modelwire"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
)

// delegationPolicy: agent:fraud may use the gpt-4o family for Alice; Alice
// herself only gpt-4o and text-embedding-*.
const delegationPolicy = `{"grants": [
  {"src": ["agent:fraud"], "dst": ["model:llm"], "models": ["gpt-4o*"], "on_behalf_of": ["user:alice@example.com"]},
  {"src": ["user:alice@example.com"], "dst": ["model:llm"], "models": ["gpt-4o", "text-embedding-*"]},
]}`

func (f *fixture) delegClient(cert *tls.Certificate, tok string) *http.Client {
	c := f.client(cert)
	// The connector's own carrier of the header.
	return &http.Client{Transport: connector.WithDelegation(c.Transport, func() (string, error) { return tok, nil })}
}

func (f *fixture) delegate(t *testing.T, user string, tools []string, revoked bool) string {
	t.Helper()
	id, err := delegation.NewID()
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.now()
	c := &delegation.Claims{V: 1, TrustDomain: string(gatewaytest.TrustDomain), User: user,
		Chain:       []delegation.Link{{ID: id, By: "user:" + user, To: gatewaytest.ID(t, identity.KindAgent, "fraud").String()}},
		Incarnation: "inc1", Tools: tools, IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix()}
	tok, err := delegation.Sign(f.mesh.CA, c)
	if err != nil {
		t.Fatal(err)
	}
	if revoked {
		st := f.state(delegationPolicy)
		st.Delegations = f.delegations(id)
		f.gw.Update(st)
	}
	return tok
}

func (f *fixture) delegations(revoked ...string) *admission.Delegations {
	return &admission.Delegations{Roots: []*x509.Certificate{f.mesh.CA.Certificate()}, TrustDomain: gatewaytest.TrustDomain,
		Revoked: delegation.NewRevocations(revoked, nil)}
}

func TestModelGatewayDecidesDelegatedRequests(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	st := f.state(delegationPolicy)
	st.Delegations = f.delegations()
	f.gw.Update(st)
	alice := f.delegate(t, "alice@example.com", nil, false)
	bob := f.delegate(t, "bob@example.com", nil, false)
	scoped := f.delegate(t, "alice@example.com", []string{"llm/x"}, false)
	for _, c := range []struct {
		name, tok, model string
		status           int
		why              reason.Code
	}{
		{"alice's agent", alice, "gpt-4o", 200, reason.Allowed},
		{"beyond alice's own rights", alice, "gpt-4o-2", 403, reason.DelegationExceedsGrantor},
		{"bob's agent", bob, "gpt-4o", 403, reason.NotGranted},
		{"no delegation", "", "gpt-4o", 403, reason.NotGranted},
		{"a tool scope covers no model", scoped, "gpt-4o", 403, reason.DelegationOutOfScope},
		{"not a delegation", "x", "gpt-4o", 403, reason.DelegationMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := f.client(f.fraud)
			if c.tok != "" {
				cl = f.delegClient(f.fraud, c.tok)
			}
			res := do(t, cl, "POST", "https://"+f.addr+"/v1/chat/completions", chatBody(c.model, ""))
			ev, full := f.lastEvent()
			if res.status != c.status || ev.Reason != c.why {
				t.Fatalf("%d %s; event %s; want %d %s", res.status, res.body, full, c.status, c.why)
			}
			if verified := c.tok != "" && c.tok != "x"; verified != bytes.Contains(full, []byte(`"on_behalf_of":{"user":`)) {
				t.Fatalf("event %s: on_behalf_of recorded must be %v", full, verified)
			}
		})
	}
	evs := f.rec.Events()
	if o := evs[0].OnBehalfOf; o == nil || o.User != "alice@example.com" || len(o.Chain) != 2 {
		t.Fatalf("first event records %+v", o)
	}
	// The model list: what the agent may use for Alice that she may use.
	res := do(t, f.delegClient(f.fraud, alice), "GET", "https://"+f.addr+"/v1/models", "")
	if _, got := modelIDs(t, res.body); !slices.Equal(got, []string{"gpt-4o"}) {
		t.Fatalf("models %v", got)
	}
	// Revoked: refused.
	revoked := f.delegate(t, "alice@example.com", nil, true)
	if res := do(t, f.delegClient(f.fraud, revoked), "POST", "https://"+f.addr+"/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 403 || res.errBody(t).Reason != reason.DelegationRevoked {
		t.Fatalf("revoked: %d %s", res.status, res.body)
	}
}

func TestModelGatewayCutsTheStreamOfARevokedDelegation(t *testing.T) {
	gate := make(chan struct{})
	f := newFixture(t, fixtureOpts{gate: gate})
	st := f.state(delegationPolicy)
	st.Delegations = f.delegations()
	f.gw.Update(st)
	alice := f.delegate(t, "alice@example.com", nil, false)
	c, why, _ := delegation.Verify(alice, delegation.VerifyOptions{Roots: []*x509.Certificate{f.mesh.CA.Certificate()}, TrustDomain: gatewaytest.TrustDomain,
		Peer: gatewaytest.ID(t, identity.KindAgent, "fraud"), Incarnation: "inc1", Now: f.clock.now()})
	if why != "" {
		t.Fatal(why)
	}
	resp, err2 := f.delegClient(f.fraud, alice).Post("https://"+f.addr+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("gpt-4o", streamWithUsage)))
	if err2 != nil {
		t.Fatal(err2)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sc := sse.NewReader(resp.Body, 1<<20)
	if d, ok := nextData(t, sc); !ok || !strings.Contains(d, modelgwtest.StreamChunks[0]) {
		t.Fatalf("first chunk %q", d)
	}
	st = f.state(delegationPolicy)
	st.Delegations = f.delegations(c.ID())
	f.gw.Update(st)
	last := ""
	for {
		d, ok := nextData(t, sc)
		if !ok {
			break
		}
		if d == "[DONE]" || strings.Contains(d, modelgwtest.StreamChunks[1]) {
			t.Fatalf("stream went on after revocation: %q", d)
		}
		last = d
	}
	// Its last event is an error that says why, naming the request's
	// event.
	var eb modelwire.ErrorBody
	if err := json.Unmarshal([]byte(last), &eb); err != nil || eb.Error.Code != reason.DelegationRevoked || eb.Reason != reason.DelegationRevoked ||
		eb.Error.AuditEvent == "" || !strings.Contains(eb.Error.Message, "delegation_revoked") {
		t.Fatalf("the stream's last event %q (%v), want an error naming delegation_revoked", last, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.ID == eb.Error.AuditEvent && e.Kind == audit.KindRequest && e.Outcome == "stream_cut" && e.OnBehalfOf != nil && e.OnBehalfOf.Delegation == c.ID()
	}); err != nil {
		t.Fatal(err)
	}
}
