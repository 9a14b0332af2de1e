package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// viewBench is a coordinator holding a mesh of 1,000 nodes (900 agents in
// 30 teams, 100 tool servers with addresses) and a policy of 300 grants,
// enough to build views from without a database.
func viewBench(b *testing.B) (*Coordinator, netmap.Node, netmap.Node) {
	b.Helper()
	var doc strings.Builder
	doc.WriteString(`{"groups": {`)
	for g := range 30 {
		if g > 0 {
			doc.WriteString(",")
		}
		fmt.Fprintf(&doc, `"group:team-%d": ["tag:team-%d", "agent:lead-%d"]`, g, g, g)
	}
	doc.WriteString(`}, "grants": [`)
	for i := range 300 {
		if i > 0 {
			doc.WriteString(",")
		}
		fmt.Fprintf(&doc, `{"src": ["group:team-%d"], "dst": ["tool:tool-%d"], "tools": ["read_*", "!read_secret"], "when": "!has(args.path) || !args.path.contains('..')"}`, i%30, i%100)
	}
	doc.WriteString(`]}`)
	pol, err := policy.Compile([]byte(doc.String()), "1")
	if err != nil {
		b.Fatal(err)
	}
	nm := &netmap.Netmap{Version: 7, TrustDomain: "bench.mesh", Policy: netmap.Policy{Version: 1, Document: doc.String()}}
	node := func(kind identity.Kind, name string, tags ...identity.Tag) netmap.Node {
		id := identity.ID{TrustDomain: nm.TrustDomain, Kind: kind, Name: identity.Name(name)}
		return netmap.Node{ID: id, Name: id.Name, Kind: kind, Tags: append([]identity.Tag{}, tags...), Status: netmap.StatusActive}
	}
	for i := range 900 {
		n := node(identity.KindAgent, fmt.Sprintf("agent-%d", i), identity.Tag(fmt.Sprintf("tag:team-%d", i%30)))
		n.Incarnation = fmt.Sprintf("a%d", i)
		nm.Nodes = append(nm.Nodes, n)
	}
	for i := range 100 {
		n := node(identity.KindTool, fmt.Sprintf("tool-%d", i))
		n.Incarnation, n.Addrs = fmt.Sprintf("t%d", i), []string{fmt.Sprintf("tool-%d.internal:7800", i)}
		nm.Nodes = append(nm.Nodes, n)
	}
	agent, tool := nm.Nodes[0], nm.Nodes[900]
	return benchCoordinator(nm, pol), agent, tool
}

// benchCoordinator is a coordinator that holds nm and pol as a publish
// leaves them, without a database: nm's nodes are put in the netmap's
// order (by name first), as publish keeps them.
func benchCoordinator(nm *netmap.Netmap, pol *policy.Policy) *Coordinator {
	nm.Nodes = slices.Clone(nm.Nodes)
	slices.SortFunc(nm.Nodes, func(a, b netmap.Node) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Incarnation, b.Incarnation))
	})
	return &Coordinator{cfg: Config{CertTTL: time.Hour}, now: time.Now, current: nm, pol: pol}
}

// BenchmarkViewForAgent: one agent's view (the services it may reach) of a
// 1,000-node mesh, as every netmap answer builds it.
func BenchmarkViewForAgent(b *testing.B) {
	c, agent, _ := viewBench(b)
	for b.Loop() {
		if _, err := c.viewFor(agent); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewForGateway: one gateway's view (its peers and its
// projection of the policy) of a 1,000-node mesh: warm, with the
// projection cached for the policy version, as every change but a policy
// apply finds it; cold, projecting anew, as the first answer after an
// apply does.
func BenchmarkViewForGateway(b *testing.B) {
	c, _, gw := viewBench(b)
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.viewFor(gw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			c.projections = projectionCache{}
			if _, err := c.viewFor(gw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
