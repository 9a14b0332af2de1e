package tailnet

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// peopleDoc is one policy for both transports: grants to people by
// user:EMAIL, and one to a tag.
const peopleDoc = `{
  "groups": {"group:finance": ["user:alice@example.com"]},
  "grants": [
    {"src": ["group:finance"], "dst": ["tool:ledger"], "tools": ["read", "write"]},
    {"src": ["user:bob@example.com"], "dst": ["tool:ledger"], "tools": ["read"]},
    {"src": ["tag:agents"], "dst": ["tool:ledger"], "tools": ["status"]},
  ],
}`

// peopleNetmap is the gateway tool:ledger's view: Alice's and Bob's
// nodes joined with --sso (their owners from the registry), and a node
// joined with an auth key.
func peopleNetmap(t *testing.T) *netmap.Netmap {
	t.Helper()
	node := func(kind, name, inc, owner string) string {
		o := ""
		if owner != "" {
			o = `,"owner":"` + owner + `"`
		}
		return fmt.Sprintf(`{"id":"spiffe://mesh.test/%s/%s","name":"%s","kind":"%s","tags":[],"status":"active","incarnation":"%s"%s}`, kind, name, name, kind, inc, o)
	}
	doc := `{"version":3,"trust_domain":"mesh.test","ca_bundle":"","nodes":[` +
		node("agent", "alice-agent", "i1", "alice@example.com") + "," +
		node("agent", "bob-agent", "i2", "bob@example.com") + "," +
		node("agent", "keyed", "i3", "") + "," +
		node("tool", "ledger", "s1", "") +
		`],"policy":{"version":1,"document":""}}`
	nm, err := netmap.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return nm
}

// meshCall is a request from the holder of a certificate for the agent
// name, issued for its registration inc (the TLS stack verified it).
func meshCall(name, inc string) *http.Request {
	id := identity.ID{TrustDomain: "mesh.test", Kind: identity.KindAgent, Name: identity.Name(name)}
	leaf := &x509.Certificate{URIs: []*url.URL{id.URL()}, Subject: pkix.Name{SerialNumber: inc}}
	r, _ := http.NewRequest(http.MethodPost, "https://ledger/mcp", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	return r
}

func tailnetCall(addr string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "http://ledger/mcp", nil)
	r.RemoteAddr = addr
	return r
}

// TestOnePolicyDecidesAPersonAlikeOnBothTransports: Alice's node joined
// with --sso (a certificate caller whose owner the netmap names) and
// Alice's tailnet laptop (WhoIs names her, in another case) get the same
// decisions from one document, and their audit names the same person;
// so do Bob's; a node without an owner and a tagged tailnet device match
// no user: selector.
func TestOnePolicyDecidesAPersonAlikeOnBothTransports(t *testing.T) {
	pol, err := policy.Compile([]byte(peopleDoc), "1")
	if err != nil {
		t.Fatal(err)
	}
	self := identity.ID{TrustDomain: "mesh.test", Kind: identity.KindTool, Name: "ledger"}
	st := admission.NewState(self, peopleNetmap(t), pol, false)
	ident := NewIdentifier(fakeWhoIs{
		"100.64.0.1:1": who("alice-laptop.tail.ts.net.", "n1", nil, "Alice@Example.com"),
		"100.64.0.2:1": who("bobs-mac.tail.ts.net.", "n2", nil, "bob@example.com"),
		"100.64.0.3:1": who("ci.tail.ts.net.", "n3", []string{"tag:agents"}, "tagged-devices"),
	}, IdentifierConfig{})

	decide := func(r *http.Request) (string, map[string]bool) {
		t.Helper()
		a, why := admission.Identify(st, r, ident)
		if why != "" {
			t.Fatalf("%s refused: %s", a.Src, why)
		}
		out := map[string]bool{}
		for _, tool := range []string{"read", "write", "status", "drop"} {
			d := a.State.Policy.Decide(policy.Request{Src: a.Node, Dst: a.State.Self, Action: policy.ActionTool, Method: "tools/call", Tool: tool})
			out[tool] = d.Allow
		}
		return a.User, out
	}
	same := func(person string, mesh, tailnet *http.Request, want map[string]bool) {
		t.Helper()
		mu, md := decide(mesh)
		tu, td := decide(tailnet)
		if mu != person || tu != person {
			t.Errorf("%s: the audit's user is %q on the mesh and %q on the tailnet", person, mu, tu)
		}
		for tool, allow := range want {
			if md[tool] != allow || td[tool] != allow {
				t.Errorf("%s, tool %s: mesh allows %v, tailnet %v; want %v", person, tool, md[tool], td[tool], allow)
			}
		}
	}
	same("alice@example.com", meshCall("alice-agent", "i1"), tailnetCall("100.64.0.1:1"),
		map[string]bool{"read": true, "write": true, "status": false, "drop": false})
	same("bob@example.com", meshCall("bob-agent", "i2"), tailnetCall("100.64.0.2:1"),
		map[string]bool{"read": true, "write": false, "status": false, "drop": false})

	// Neither a node joined with a key nor a tagged device has a person:
	// the key-joined agent, linked by no grant, is not even admitted.
	if a, why := admission.Identify(st, meshCall("keyed", "i3"), ident); why != reason.NoGrant || a.User != "" {
		t.Errorf("keyed node: %+v, %q; want no user, refused %s", a, why, reason.NoGrant)
	}
	if u, d := decide(tailnetCall("100.64.0.3:1")); u != "" || d["read"] || !d["status"] {
		t.Errorf("tagged tailnet device: user %q, decisions %v", u, d)
	}
}
