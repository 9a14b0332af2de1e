package engine

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

// FuzzNodeViewFromNetmap: whatever netmap a node decodes (from the
// coordinator or its cache), the state a gateway builds from it admits
// only active nodes whose identity parses, never a revoked registration, keeps the view's staleness, and
// a connector resolves a service only to an active serving node with an
// address.
func FuzzNodeViewFromNetmap(f *testing.F) {
	f.Add([]byte(`{"version":3,"trust_domain":"t.mesh","cert_ttl":3600000000000,"nodes":[`+
		`{"id":"spiffe://t.mesh/tool/files","name":"files","kind":"tool","tags":["tag:a"],"status":"active","incarnation":"i1","addrs":["files:1"]},`+
		`{"id":"spiffe://t.mesh/agent/teller","name":"teller","kind":"agent","tags":[],"status":"active","incarnation":"i2"},`+
		`{"id":"spiffe://t.mesh/agent/old","name":"old","kind":"agent","tags":[],"status":"revoked","incarnation":"i3"},`+
		`{"id":"spiffe://t.mesh/model/llm","name":"llm","kind":"model","tags":[],"status":"active","addrs":["llm:1"]}],`+
		`"policy":{"version":0,"document":""}}`), true)
	f.Add([]byte(`{"version":1,"nodes":[{"id":"","name":"files","kind":"model","tags":null,"status":"active","incarnation":""}],"policy":{"version":0,"document":""}}`), false)
	f.Add([]byte(`{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/a","NAME":"a","Kind":"agent","stAtus":"active","inCArnAtion":"0"}]}`), false)
	self, _ := identity.New("t.mesh", identity.KindTool, "files")
	f.Fuzz(func(t *testing.T, b []byte, stale bool) {
		nm, err := netmap.Decode(b)
		if err != nil {
			return
		}
		st := admission.NewState(self, nm, nil, stale)
		if st.Stale != stale {
			t.Fatalf("state stale %v from a view stale %v", st.Stale, stale)
		}
		for name, p := range st.Peers {
			n, ok := nm.Node(name)
			if !ok || p.ID.Name != name || p.ID.String() == "" {
				t.Fatalf("peer %s admitted: not in the netmap as such (%+v)", name, p)
			}
			found := false
			for _, nn := range nm.Nodes {
				found = found || nn.ID == p.ID && nn.Status == netmap.StatusActive && nn.Incarnation == p.Incarnation
			}
			if !found {
				t.Fatalf("peer %s admitted without an active entry with its identity and incarnation (%+v)", name, n)
			}
		}
		for _, nn := range nm.Nodes {
			if nn.Status == netmap.StatusRevoked && nn.Incarnation != "" && st.Check(nn.ID, nn.Incarnation) == "" {
				t.Fatalf("a certificate of the revoked registration %+v is admitted", nn)
			}
		}
		for _, kind := range []identity.Kind{"", identity.KindTool, identity.KindModel} {
			for _, n := range nm.Nodes {
				got, err := resolveService(nm, kind, n.Name)
				if err != nil {
					continue
				}
				if got.Status != netmap.StatusActive || !got.Kind.Serves() || len(got.Addrs) == 0 || kind != "" && got.Kind != kind {
					t.Fatalf("resolved %s:%s to %+v", kind, n.Name, got)
				}
			}
		}
	})
}
