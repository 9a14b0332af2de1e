package modelgw

import (
	"context"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// A model request from a node with a registered owner is decided by
// user: selectors and its event names the person; a refused one too.
func TestModelRequestsNameThePersonBehindTheCaller(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	st := f.state(`{"grants": [{"src": ["user:alice@example.com"], "dst": ["model:llm"], "models": ["gpt-4o"]}]}`)
	fr := st.Peers["fraud"]
	fr.Node.User = "alice@example.com"
	st.Peers["fraud"] = fr
	ot := st.Peers["other"]
	ot.Node.User = "bob@example.com"
	st.Peers["other"] = ot
	f.gw.Update(st)
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 200 {
		t.Fatalf("alice's node: %d %s", res.status, res.body)
	}
	// bob's node is linked by no grant: refused at admission, still named.
	if res := f.do(f.other, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 403 || res.errBody(t).Reason != reason.NoGrant {
		t.Fatalf("bob's node: %d %s", res.status, res.body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, want := range []struct {
		user     string
		decision audit.Decision
	}{{"alice@example.com", audit.Allow}, {"bob@example.com", audit.Deny}} {
		if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.User == want.user && e.Decision == want.decision }); err != nil {
			t.Errorf("no %s event naming %s: %v", want.decision, want.user, err)
		}
	}
}
