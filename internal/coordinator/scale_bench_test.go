package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// scaleMesh is a coordinator holding a mesh of n nodes: 1 % tool servers
// (with addresses), the rest agents in 500 teams, under a policy of one
// grant per team and tool pair that the teams use (each team reaches 5
// tools; 2,500 grants with a when, plus a monitoring grant to every tool).
// It builds views without a database, as publish leaves the coordinator,
// and also returns the nodes with the tool servers first.
func scaleMesh(b *testing.B, n int) (*Coordinator, []netmap.Node) {
	b.Helper()
	tools := max(n/100, 1)
	var doc strings.Builder
	doc.WriteString(`{"grants": [`)
	for team := range 500 {
		for k := range 5 {
			fmt.Fprintf(&doc, `{"src": ["tag:team-%d"], "dst": ["tool:tool-%d"], "tools": ["read_*", "!read_secret"], "when": "!has(args.path) || !args.path.contains('..')"},`+"\n", team, (team*5+k)%tools)
		}
	}
	doc.WriteString(`{"src": ["tag:monitoring"], "dst": ["*"]}]}`)
	pol, err := policy.Compile([]byte(doc.String()), "1")
	if err != nil {
		b.Fatal(err)
	}
	nm := &netmap.Netmap{Version: 7, TrustDomain: "bench.mesh", Policy: netmap.Policy{Version: 1, Document: doc.String()}}
	for i := range n {
		var nd netmap.Node
		if i < tools {
			nd = netmap.Node{Kind: identity.KindTool, Name: identity.Name(fmt.Sprintf("tool-%d", i)), Tags: []identity.Tag{"tag:prod"},
				Addrs: []string{fmt.Sprintf("tool-%d.internal:7800", i)}}
		} else {
			nd = netmap.Node{Kind: identity.KindAgent, Name: identity.Name(fmt.Sprintf("agent-%d", i)),
				Tags: []identity.Tag{identity.Tag(fmt.Sprintf("tag:team-%d", i%500))}}
		}
		nd.ID = identity.ID{TrustDomain: nm.TrustDomain, Kind: nd.Kind, Name: nd.Name}
		nd.Status, nd.Incarnation = netmap.StatusActive, fmt.Sprintf("inc-%d", i)
		nm.Nodes = append(nm.Nodes, nd)
	}
	nodes := nm.Nodes
	return benchCoordinator(nm, pol), nodes
}

// BenchmarkNetmapScale measures, for meshes of 1,000 and 10,000 nodes, the
// size of the whole netmap and of the views an agent and a gateway get,
// and the fan-out of one change: every watching node's view built and
// encoded as handleNetmap does (GOMAXPROCS at a time), for 1,000 watchers
// and for every node of the mesh watching. The network (TLS, the HTTP
// answer) is not in it: BenchmarkNetmapFanout1000 measures that end to end.
func BenchmarkNetmapScale(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		c, nodes := scaleMesh(b, n)
		b.Run(fmt.Sprintf("nodes=%d/size", n), func(b *testing.B) {
			full, _ := json.Marshal(c.current)
			agent, err := c.viewFor(nodes[len(nodes)-1])
			if err != nil {
				b.Fatal(err)
			}
			gw, err := c.viewFor(nodes[0])
			if err != nil {
				b.Fatal(err)
			}
			av, _ := json.Marshal(agent)
			gv, _ := json.Marshal(gw)
			for b.Loop() {
			}
			b.ReportMetric(float64(len(full))/1024, "KiB-whole")
			b.ReportMetric(float64(len(av))/1024, "KiB-agent-view")
			b.ReportMetric(float64(len(gv))/1024, "KiB-gateway-view")
			b.ReportMetric(float64(len(gw.Nodes)), "gateway-peers")
		})
		for _, w := range []int{1_000, 10_000} {
			if w > n {
				continue
			}
			b.Run(fmt.Sprintf("nodes=%d/fanout=%d", n, w), func(b *testing.B) {
				// Watchers: every gateway, then agents.
				watchers := nodes[:w]
				var bytes atomic.Int64
				for b.Loop() {
					c.projections = projectionCache{} // an apply empties it
					bytes.Store(0)
					var next atomic.Int64
					var wg sync.WaitGroup
					for range runtime.GOMAXPROCS(0) {
						wg.Go(func() {
							for i := next.Add(1) - 1; i < int64(len(watchers)); i = next.Add(1) - 1 {
								v, err := c.viewFor(watchers[i])
								if err != nil {
									b.Error(err)
									return
								}
								out, _ := json.Marshal(v)
								bytes.Add(int64(len(out)))
							}
						})
					}
					wg.Wait()
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/fanout")
				b.ReportMetric(float64(bytes.Load())/1024/1024, "MiB-sent")
			})
		}
	}
}

// BenchmarkCoordinatorMemory10k measures what a coordinator holds for a
// mesh of 10,000 nodes: a real coordinator (SQLite, TLS listener) gets
// 10,000 node records (1 % tool servers with addresses, agents in 500
// teams) and the scale policy, publishes after a re-tag (-benchtime
// times), and builds every node's view once (which fills the projection cache). It reports the Go heap after
// a GC, and the process's resident set, against the same coordinator
// before the nodes were added.
func BenchmarkCoordinatorMemory10k(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	c, err := Start(ctx, Config{DataDir: filepath.Join(b.TempDir(), "data"), Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	heap0, rss0 := liveHeap(), rss()
	policyOf, _ := scaleMesh(b, 1)
	doc := policyOf.current.Policy.Document
	seedNodes(b, c, n)
	if _, err := c.reg.addPolicy(ctx, doc, "bench", "", time.Now()); err != nil {
		b.Fatal(err)
	}
	if err := c.publish(ctx); err != nil {
		b.Fatal(err)
	}
	// A publish follows a change: one re-tag each.
	var publish time.Duration
	for i := 0; b.Loop(); i++ {
		if err := c.reg.setTags(ctx, "agent-5000", []string{fmt.Sprintf("tag:team-%d", i%500)}); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := c.publish(ctx); err != nil {
			b.Fatal(err)
		}
		publish += time.Since(t0)
	}
	for _, nd := range c.Netmap().Nodes {
		if _, err := c.viewFor(nd); err != nil {
			b.Fatal(err)
		}
	}
	heap1, rss1 := liveHeap(), rss()
	b.ReportMetric(float64(publish.Microseconds())/1000/float64(b.N), "ms/publish")
	b.ReportMetric(float64(heap1-heap0)/(1<<20), "MiB-heap-added")
	b.ReportMetric(float64(heap1-heap0)/n, "B-heap/node")
	b.ReportMetric(float64(rss1-rss0)/(1<<20), "MiB-rss-added")
	b.ReportMetric(float64(rss1)/(1<<20), "MiB-rss")
}

func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// rss is this process's resident set in bytes (0 where /proc is missing).
func rss() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
