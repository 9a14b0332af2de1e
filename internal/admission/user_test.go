package admission

import (
	"net/http"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// A certificate caller's user is the owner its registration has in the
// gateway's netmap, and nothing else: admitted, it is the policy's user
// and the audit's; refused by the policy, the audit still names the
// person; a certificate of another registration of the name names nobody.
func TestCertificateCallersUserIsTheNetmapsOwner(t *testing.T) {
	self := mustID(t, identity.KindTool, "db")
	node := func(name, inc string, owner identity.User) netmap.Node {
		id := mustID(t, identity.KindAgent, name)
		return netmap.Node{ID: id, Name: id.Name, Kind: id.Kind, Tags: []identity.Tag{}, Status: netmap.StatusActive, Incarnation: inc, Owner: owner}
	}
	nm := &netmap.Netmap{Nodes: []netmap.Node{
		{ID: self, Name: self.Name, Kind: self.Kind, Tags: []identity.Tag{}, Status: netmap.StatusActive, Incarnation: "s1"},
		node("laptop", "i1", "alice@example.com"),
		node("stray", "i2", "bob@example.com"),
		node("keyed", "i3", ""),
	}}
	st := NewState(self, nm, mustPolicy(t, `{"grants": [
	  {"src": ["user:alice@example.com"], "dst": ["tool:db"], "tools": ["*"]},
	  {"src": ["agent:keyed"], "dst": ["tool:db"], "tools": ["*"]},
	]}`), false)
	for _, tt := range []struct {
		name, inc, user string
		why             reason.Code
	}{
		{"laptop", "i1", "alice@example.com", ""},
		{"stray", "i2", "bob@example.com", reason.NoGrant},
		{"keyed", "i3", "", ""},
		{"laptop", "i0", "", reason.StaleIncarnation},
	} {
		a, why := Identify(st, certRequest(mustID(t, identity.KindAgent, tt.name), tt.inc), nil)
		if why != tt.why || a.User != tt.user {
			t.Errorf("%s (%s): Identify = user %q, %q; want %q, %q", tt.name, tt.inc, a.User, why, tt.user, tt.why)
		}
		if why == "" && a.Node.User != tt.user {
			t.Errorf("%s: the policy's user %q, the audit's %q", tt.name, a.Node.User, a.User)
		}
	}
	// A tailnet caller's user is its WhoIs login, through the same field.
	plain, _ := http.NewRequest(http.MethodPost, "http://db/mcp", nil)
	c := &Caller{Node: policy.Node{Kind: identity.KindAgent, Tags: []identity.Tag{}, User: "alice@example.com"}, Src: "tailnet:laptop.ts.net/alice@example.com", Key: "n1"}
	if a, why := Identify(st, plain, fakeIdentifier{c: c}); why != "" || a.User != "alice@example.com" || a.Node.User != "alice@example.com" {
		t.Fatalf("tailnet caller: %+v, %q", a, why)
	}
}
