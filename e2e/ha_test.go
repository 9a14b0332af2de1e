//go:build unix

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// haCluster is coordinators as deployed: each an `agentmesh coordinator`
// process, on one PostgreSQL database (a private server, its own process)
// or, with no database, one coordinator on its SQLite data directory.
type haCluster struct {
	tb      testing.TB
	dir     string
	db      string // "" for SQLite
	keyFile string
	procs   []*proc
	serving []serving
}

// startCluster starts n coordinators on db ("" for SQLite, then n is 1).
func startCluster(tb testing.TB, db string, n int) *haCluster {
	tb.Helper()
	c := &haCluster{tb: tb, dir: tb.TempDir(), db: db}
	if db != "" {
		c.keyFile = filepath.Join(c.dir, "db.key")
		key, err := exec.Command(agentmeshBin, "coordinator", "keygen").Output()
		if err != nil {
			tb.Fatalf("coordinator keygen: %v", err)
		}
		if err := os.WriteFile(c.keyFile, key, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	for range n {
		c.add()
	}
	return c
}

// add starts one more coordinator and waits until it serves.
func (c *haCluster) add() serving {
	c.tb.Helper()
	i := len(c.procs)
	// Every node of these tests joins from 127.0.0.1.
	argv := []string{agentmeshBin, "coordinator", "--data", filepath.Join(c.dir, fmt.Sprintf("c%d", i+1)), "--listen", "127.0.0.1:0",
		"--join-rate", "100000", "--join-burst", "100000"}
	if c.db != "" {
		argv = append(argv, "--db", c.db, "--database-key", c.keyFile)
	}
	p := startServer(c.tb, fmt.Sprintf("coordinator %d", i+1), argv, (&mesh{}).env())
	s, err := p.waitServing(startTimeout)
	if err != nil {
		c.tb.Fatalf("coordinator %d did not start serving: %v\n%s", i+1, err, p.stderr)
	}
	c.procs, c.serving = append(c.procs, p), append(c.serving, s)
	return s
}

// admin is an admin client of coordinator i.
func (c *haCluster) admin(i int) *controlclient.Client {
	c.tb.Helper()
	return clientIn(c.tb, c.serving[i].AdminState)
}

// clientIn is a control client of the node whose state is in dir.
func clientIn(tb testing.TB, dir string) *controlclient.Client {
	tb.Helper()
	return coordinatortest.NewClient(tb, dir, nil)
}

// key creates an auth key through coordinator i.
func (c *haCluster) key(i int, req controlapi.KeyCreateRequest) string {
	c.tb.Helper()
	var resp controlapi.KeyCreateResponse
	if err := c.admin(i).Call(context.Background(), http.MethodPost, controlapi.PathKeys, req, &resp); err != nil {
		c.tb.Fatal(err)
	}
	return resp.Key
}

// join joins a node through the coordinator the key names.
func (c *haCluster) join(key, name string) *controlclient.Client {
	c.tb.Helper()
	dir := filepath.Join(c.dir, "nodes", name)
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: name, State: dir}); err != nil {
		c.tb.Fatalf("join %s: %v", name, err)
	}
	return clientIn(c.tb, dir)
}

// BenchmarkControlPlane measures the coordinator's write paths as
// deployed (a coordinator process; the clients are the benchmark's), on
// SQLite and on PostgreSQL in the same run, so that their ratio is read
// from one run: joins (key check, node record, certificate), renewals
// (registration check, certificate) and audit ingest (batches of 100
// events appended to the hash chain, receipt signed).
func BenchmarkControlPlane(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	for _, st := range []string{"sqlite", "postgres"} {
		b.Run("store="+st, func(b *testing.B) {
			db := ""
			if st == "postgres" {
				db = pgtest.Shared(b).NewDatabase(b)
			}
			c := startCluster(b, db, 1)
			b.Run("op=join", func(b *testing.B) {
				key := c.key(0, controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
				dir := b.TempDir()
				for i := 0; b.Loop(); i++ {
					if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: uniqueName("j"), State: filepath.Join(dir, fmt.Sprint(i))}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "joins/s")
			})
			b.Run("op=renew", func(b *testing.B) {
				node := c.join(c.key(0, controlapi.KeyCreateRequest{Kind: "tool"}), uniqueName("renewer"))
				for b.Loop() {
					if _, err := node.Renew(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "renewals/s")
			})
			b.Run("op=ingest100", func(b *testing.B) {
				node := c.join(c.key(0, controlapi.KeyCreateRequest{Kind: "tool"}), uniqueName("shipper"))
				dst := node.ID().String()
				for i := 0; b.Loop(); i++ {
					events := audittest.Events(i*100, 100, time.Now())
					for j := range events {
						events[j].Dst = dst
					}
					if err := node.Send(context.Background(), events); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
			})
		})
	}
}

var names atomic.Int64

// uniqueName is a node name no other node of this test binary has.
func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, names.Add(1)) }

// BenchmarkPolicyAcrossCoordinators measures, with two coordinator
// processes on one PostgreSQL database, the time from an admin's `policy
// apply` call on coordinator A to the netmap with that policy reaching a
// node (a gateway applies it on arrival): watching A itself (the
// baseline: one coordinator's publish), and watching B (A's commit
// notifies B through the database, B rereads and publishes).
func BenchmarkPolicyAcrossCoordinators(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	c := startCluster(b, pgtest.Shared(b).NewDatabase(b), 2)
	admin := c.admin(0)
	for _, w := range []struct {
		name string
		via  int
	}{{"watcher=A", 0}, {"watcher=B", 1}} {
		b.Run(w.name, func(b *testing.B) {
			// A key minted on a coordinator names it: the node joins
			// through it and watches it.
			node := c.join(c.key(w.via, controlapi.KeyCreateRequest{Kind: "tool"}), uniqueName("files"))
			ctx, cancel := context.WithCancel(context.Background())
			versions := make(chan int64, 1024)
			done := make(chan struct{})
			go func() {
				defer close(done)
				node.Watch(ctx, func(nm *netmap.Netmap) { versions <- nm.Policy.Version })
			}()
			defer func() { cancel(); <-done }()
			for i := 0; b.Loop(); i++ {
				doc := fmt.Sprintf(`{"grants": [{"src": ["agent:a%d"], "dst": ["tool:files"], "tools": ["*"]}]}`, names.Add(1))
				var pv controlapi.PolicyVersion
				if err := admin.Call(ctx, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv); err != nil {
					b.Fatal(err)
				}
				for v := range versions {
					if v >= pv.Version {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/apply-to-watcher")
		})
	}
}

// BenchmarkNodeFailover measures how long a node's renewal takes when the
// coordinator it talks to has just been killed (SIGKILL): from the kill
// to a renewed certificate from another coordinator, with three
// coordinator processes on one PostgreSQL database. Between rounds (not
// timed) a new coordinator replaces the dead one and the node, watching
// its netmap as nodes do, learns of it. The baseline is a renewal with
// every coordinator up, in the same run.
func BenchmarkNodeFailover(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	c := startCluster(b, pgtest.Shared(b).NewDatabase(b), 3)
	node := c.join(c.key(0, controlapi.KeyCreateRequest{Kind: "tool"}), uniqueName("files"))
	ctx, cancel := context.WithCancel(context.Background())
	netmaps := make(chan *netmap.Netmap, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		node.Watch(ctx, func(nm *netmap.Netmap) { netmaps <- nm })
	}()
	defer func() { cancel(); <-done }()
	live := map[string]*proc{}
	for i, s := range c.serving {
		live[s.URL] = c.procs[i]
	}
	// awaitKnown waits until a netmap lists every live coordinator. A
	// killed one stays listed until its registration expires (15 s), as
	// it would in production: the node may try it first, and is refused.
	awaitKnown := func() {
		for nm := range netmaps {
			known := 0
			for u := range live {
				if slices.Contains(nm.Coordinators, u) {
					known++
				}
			}
			if known == len(live) {
				return
			}
		}
	}
	b.Run("coordinator=up", func(b *testing.B) {
		for b.Loop() {
			if _, err := node.Renew(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("coordinator=killed", func(b *testing.B) {
		var total time.Duration
		for range b.N {
			awaitKnown()
			cur := node.Coordinator()
			p := live[cur]
			if p == nil {
				b.Fatalf("the node talks to %s, which is not a live coordinator", cur)
			}
			start := time.Now()
			syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
			if _, err := node.Renew(ctx); err != nil {
				b.Fatalf("renewal after %s was killed: %v", cur, err)
			}
			total += time.Since(start)
			if node.Coordinator() == cur {
				b.Fatalf("renewed through %s, which was killed", cur)
			}
			delete(live, cur)
			s := c.add()
			live[s.URL] = c.procs[len(c.procs)-1]
		}
		b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/failover")
	})
}
