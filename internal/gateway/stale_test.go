package gateway

import (
	"net/http"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayOnAStaleViewCutsEveryPeerAndAdmitsNobody: when the node's
// view of the mesh goes stale (State.Stale), open sessions and connections
// are closed and audited, and new clients are refused with stale_netmap,
// before anything reaches the upstream.
func TestGatewayOnAStaleViewCutsEveryPeerAndAdmitsNobody(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := testContext(t)
	cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
	if _, err := callText(ctx, cs, "echo", map[string]any{"text": "before"}); err != nil {
		t.Fatal(err)
	}
	stale := f.state(basePolicy)
	stale.Stale = true
	f.gw.Update(stale)
	fraud := f.peers["fraud"].ID
	for _, s := range f.gw.sessions.all() {
		if s.owner == fraud {
			t.Fatalf("session %s still open on a stale view", s.id)
		}
	}
	if _, err := callText(ctx, cs, "echo", map[string]any{"text": "after"}); err == nil {
		t.Fatal("a call went through on a stale view")
	}
	status, _, b := f.rawPost(ctx, f.httpClient(f.fraud), `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`, nil)
	if d := rpcError(t, b); status != http.StatusForbidden || d.Reason != reason.StaleNetmap {
		t.Fatalf("new client on a stale view: %d %+v, want 403 %s", status, d, reason.StaleNetmap)
	}
	if f.up.Received("after") {
		t.Fatal("a call on a stale view reached the upstream")
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Kind == audit.KindSession && e.Src == fraud.String() && e.Reason == reason.StaleNetmap && e.Outcome == "closed"
	}); err != nil {
		t.Fatalf("closed session not audited: %v", err)
	}
	// Confirmed again, the same peer is admitted.
	f.gw.Update(f.state(basePolicy))
	status, _, _ = f.rawPost(ctx, f.httpClient(f.fraud), `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
	if status != http.StatusOK {
		t.Fatalf("peer refused once the view is fresh again: %d", status)
	}
}
