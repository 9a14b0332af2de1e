package coordinator

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
)

// JoinAgents joins n agents named prefix-0, prefix-1... over the API with
// the reusable key, parallel at a time, and reports joins per second and
// the latency of one join at p50 and p99. It returns the time all took.
// (Exported for the benchmarks of package coordinator_test.)
func JoinAgents(b *testing.B, key, prefix string, n, parallel int) time.Duration {
	dir := b.TempDir()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range parallel {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				s := time.Now()
				if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: fmt.Sprintf("%s-%d", prefix, i), State: filepath.Join(dir, fmt.Sprint(i))}); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(s)
			}
		})
	}
	wg.Wait()
	all := time.Since(t0)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(n)/all.Seconds(), "joins/s")
	b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "ms-p99")
	return all
}

// seedNodes writes n node records straight into c's database (1 % tool
// servers with addresses, agents in 500 teams) and has the registry
// reload them.
func seedNodes(b *testing.B, c *Coordinator, n int) {
	b.Helper()
	ctx := context.Background()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixNano()
	tools := n / 100
	for i := range n {
		name, kind, tags, addrs := fmt.Sprintf("agent-%d", i), "agent", fmt.Sprintf(`["tag:team-%d"]`, i%500), "[]"
		if i < tools {
			name, kind, tags, addrs = fmt.Sprintf("tool-%d", i), "tool", `["tag:prod"]`, fmt.Sprintf(`["tool-%d.internal:7800"]`, i)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO nodes(incarnation, name, kind, tags, status, addrs, key_id, created_at)
			VALUES(?, ?, ?, ?, 'active', ?, '', ?)`, "inc-"+strconv.Itoa(i), name, kind, tags, addrs, now); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	seeded(c) // the rows above bypassed the registry
}

// seedMesh starts a real coordinator (SQLite, TLS listener) with n nodes
// (seedNodes) and the scale policy, and publishes. It is the mesh the
// publish and join benchmarks change.
func seedMesh(b *testing.B, n int, limits Limits) *Coordinator {
	b.Helper()
	ctx := context.Background()
	c, err := Start(ctx, Config{DataDir: filepath.Join(b.TempDir(), "data"), Listen: "127.0.0.1:0", Limits: limits})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	seedNodes(b, c, n)
	policyOf, _ := scaleMesh(b, 1)
	if _, err := c.reg.addPolicy(ctx, policyOf.current.Policy.Document, "bench", "", time.Now()); err != nil {
		b.Fatal(err)
	}
	if err := c.publish(ctx); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkPublish10k measures one registry change (a re-tag of one agent,
// as 'agentmesh nodes tag' makes it) and the publish that follows it, in a
// mesh of 10,000 nodes. One op is one change and its publish.
func BenchmarkPublish10k(b *testing.B) {
	c := seedMesh(b, 10_000, Limits{})
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if err := c.reg.setTags(ctx, "agent-5000", []string{fmt.Sprintf("tag:team-%d", i%500)}); err != nil {
			b.Fatal(err)
		}
		if err := c.publish(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/change")
}

// BenchmarkJoin200Into10k joins 200 agents, 8 at a time, into a mesh that
// already has 10,000 nodes, over the API (key pair, TLS, CSR, key check
// and node record, certificate, state files), and reports joins per
// second and the latency of one join at p50 and p99.
func BenchmarkJoin200Into10k(b *testing.B) {
	const agents, parallel = 200, 8
	for b.Loop() {
		b.StopTimer()
		c := seedMesh(b, 10_000, Limits{JoinRate: 1e9, JoinBurst: 1 << 30})
		d, err := nodestate.Open(c.AdminDir())
		if err != nil {
			b.Fatal(err)
		}
		admin, err := controlclient.New(d, controlclient.Options{})
		if err != nil {
			b.Fatal(err)
		}
		var resp controlapi.KeyCreateResponse
		if err := admin.Call(context.Background(), "POST", controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "agent", Reusable: true}, &resp); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		JoinAgents(b, resp.Key, "new", agents, parallel)
		b.StopTimer()
		admin.Close()
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkRevokeDuringJoinStorm10k measures how long a revocation takes
// to be published (the revoke committed and a netmap holding it
// installed, which wakes every watcher) in a mesh of 10,000 nodes while 8
// joins at a time are being recorded and published, as handleJoin and
// handleNodeRevoke do, without the network. One op is one revocation.
func BenchmarkRevokeDuringJoinStorm10k(b *testing.B) {
	c := seedMesh(b, 10_000, Limits{})
	ctx := context.Background()
	now := time.Now().UTC()
	key := keyRecord{KeyInfo: controlapi.KeyInfo{ID: "storm", Kind: "agent", Tags: []string{}, Reusable: true,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}, SecretHash: "unused"}
	if err := c.reg.createKey(ctx, key); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var joins atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.reg.join(ctx, joinAttempt{keyID: key.ID, decide: func(keyRecord, bool) (netmap.Node, error) {
					return netmap.Node{Name: identity.Name(fmt.Sprintf("storm-%d-%d", w, i)), Kind: identity.KindAgent, Tags: []identity.Tag{}, Incarnation: newIncarnation()}, nil
				}}, time.Now())
				if err == nil {
					err = c.publish(ctx)
				}
				if err != nil {
					b.Error(err)
					return
				}
				joins.Add(1)
			}
		})
	}
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if err := c.reg.revokeNode(ctx, fmt.Sprintf("agent-%d", 100+i), time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := c.publish(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	close(stop)
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "ms-max")
	b.ReportMetric(float64(joins.Load())/b.Elapsed().Seconds(), "joins/s")
}
