package gateway

import (
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// A mesh caller whose registration has an owner (joined with --sso) is
// decided by user: selectors, and every event of its calls names the
// person in the same field a tailnet caller's WhoIs login fills.
func TestMeshCallersOwnerDecidesAndIsAudited(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := testContext(t)
	f.gw.Update(f.state(`{"grants": [
	  {"src": ["user:alice@example.com"], "dst": ["tool:payments-db"], "tools": ["echo"]},
	  {"src": ["agent:fraud", "agent:other"], "dst": ["tool:payments-db"], "tools": ["query"]},
	]}`, func(p map[identity.Name]admission.Peer) {
		fraud := p["fraud"]
		fraud.Node.User = "alice@example.com"
		p["fraud"] = fraud
		other := p["other"]
		other.Node.User = "bob@example.com"
		p["other"] = other
	}))
	alice := f.connect(ctx, f.fraud, "", nil)
	if _, err := alice.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
		t.Fatalf("alice's node calling echo: %v", err)
	}
	bob := f.connect(ctx, f.other, "", nil)
	_, err := bob.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if d := denialOf(t, err); d.Reason != reason.NotGranted {
		t.Fatalf("bob's node calling echo: %+v, want %s", d, reason.NotGranted)
	}
	users := map[string]string{f.peers["fraud"].ID.String(): "alice@example.com", f.peers["other"].ID.String(): "bob@example.com"}
	seen := map[string]int{}
	for _, e := range f.rec.Events() {
		if want, ok := users[e.Src]; ok {
			if e.User != want {
				t.Errorf("%s event from %s names user %q, want %q", e.Kind, e.Src, e.User, want)
			}
			if e.Kind == audit.KindRequest && e.Tool == "echo" {
				seen[e.User]++
				if e.Basis == nil || e.Basis.SrcUser != want {
					t.Errorf("echo by %s: basis %+v, want src_user %q", want, e.Basis, want)
				}
			}
		}
	}
	if seen["alice@example.com"] != 1 || seen["bob@example.com"] != 1 {
		t.Fatalf("echo events by user: %v", seen)
	}
	// Alice's node is revoked: the event that closes its connection names
	// her too, though the view no longer lists the registration.
	f.gw.Update(f.state(`{"grants": [{"src": ["agent:other"], "dst": ["tool:payments-db"], "tools": ["query"]}]}`, func(p map[identity.Name]admission.Peer) {
		fraud := p["fraud"]
		fraud.Revoked = true
		p["fraud"] = fraud
	}))
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Kind == audit.KindConnection && e.Outcome == audit.OutcomeClosed && e.Src == f.peers["fraud"].ID.String()
	})
	if err != nil || ev.User != "alice@example.com" {
		t.Fatalf("closed connection of alice's node: %+v, %v", ev, err)
	}
}
