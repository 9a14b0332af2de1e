//go:build unix

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// TestCoordinatorsKilledUnderLoad runs three coordinator processes on one
// PostgreSQL database under load (joins, renewals, audit shipping from
// several nodes, policy applies, a node watching its netmap) and kills
// two of them with SIGKILL, one after the other, the first being the one
// every node joined through. Nodes fail over on their own: none loses its
// certificate, every audit event shipped is stored exactly once, policy
// changes keep reaching the watcher, and `audit verify` passes.
func TestCoordinatorsKilledUnderLoad(t *testing.T) {
	requireE2E(t)
	c := startCluster(t, pgtest.Shared(t).NewDatabase(t), 3)
	var urls []string
	for _, s := range c.serving {
		urls = append(urls, s.URL)
	}
	key := c.key(0, controlapi.KeyCreateRequest{Kind: "tool", Reusable: true})
	joinNode := func(name string) (*controlclient.Client, error) {
		dir := filepath.Join(c.dir, "nodes", name)
		if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: name, State: dir, Coordinators: urls}); err != nil {
			return nil, err
		}
		return clientIn(t, dir), nil
	}
	const shippers, per = 4, 20
	nodes := make([]*controlclient.Client, shippers)
	for i := range nodes {
		var err error
		if nodes[i], err = joinNode(fmt.Sprintf("shipper-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	watcher, err := joinNode("watcher")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	shipped := make([]int, shippers)   // batches stored, per shipper
	progress := make(chan struct{}, 1) // a shipper stored a batch
	var loadErrs []error
	fail := func(err error) {
		mu.Lock()
		loadErrs = append(loadErrs, err)
		mu.Unlock()
	}
	// retry calls f until it succeeds, as a node's spool and renewal
	// loop do: with backoff, never giving up while the test runs.
	retry := func(f func() error) bool {
		b := backoff.Backoff{Max: time.Second}
		for {
			err := f()
			if err == nil {
				return true
			}
			if ctx.Err() != nil {
				fail(err)
				return false
			}
			b.Wait(ctx)
		}
	}
	for i, node := range nodes {
		dst := node.ID().String()
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				events := audittest.Events(n*per, per, time.Now())
				for j := range events {
					events[j].Dst = dst
				}
				if !retry(func() error { return node.Send(ctx, events) }) {
					return
				}
				if !retry(func() error { _, err := node.Renew(ctx); return err }) {
					return
				}
				mu.Lock()
				shipped[i]++
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}
	// Joins keep coming, each through whichever coordinator answers.
	joins := 0
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			// A join whose answer was lost with its coordinator may have
			// committed: asked again by the same node (same state, same
			// key pair), another coordinator answers with its
			// registration rather than name_taken.
			if !retry(func() error { _, err := joinNode(fmt.Sprintf("joiner-%d", n)); return err }) {
				return
			}
			mu.Lock()
			joins++
			mu.Unlock()
		}
	})
	versions := make(chan int64, 4096)
	watchCtx, stopWatch := context.WithCancel(ctx)
	wg.Go(func() {
		watcher.Watch(watchCtx, func(nm *netmap.Netmap) {
			select {
			case versions <- nm.Policy.Version:
			default:
			}
		})
	})
	admin := c.admin(2) // the admin of a coordinator that stays up, failing over is tested apart
	apply := func(i int) int64 {
		var pv controlapi.PolicyVersion
		doc := fmt.Sprintf(`{"grants": [{"src": ["agent:a%d"], "dst": ["tool:shipper-0"], "tools": ["*"]}]}`, i)
		retry(func() error {
			return admin.Call(ctx, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv)
		})
		return pv.Version
	}
	// awaitProgress waits until every shipper stored three more batches
	// than it had at the call, and the watcher saw a policy applied now.
	round := 0
	awaitProgress := func(what string) {
		t.Helper()
		mu.Lock()
		base := append([]int(nil), shipped...)
		mu.Unlock()
		round++
		want := apply(round)
		for v := range versions {
			if v >= want {
				break
			}
		}
		for {
			mu.Lock()
			done := true
			for i := range shipped {
				done = done && shipped[i] >= base[i]+3
			}
			errs := len(loadErrs)
			mu.Unlock()
			if done || errs > 0 || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-progress:
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no progress %s: %v", what, loadErrs)
		}
	}
	awaitProgress("before any coordinator died")
	syscall.Kill(c.procs[0].cmd.Process.Pid, syscall.SIGKILL)
	awaitProgress("after coordinator 1 was killed")
	syscall.Kill(c.procs[1].cmd.Process.Pid, syscall.SIGKILL)
	awaitProgress("after coordinator 2 was killed")
	close(stop)
	stopWatch()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(loadErrs) > 0 {
		t.Fatalf("load failed: %v", loadErrs)
	}
	t.Logf("batches shipped per node %v, joins %d", shipped, joins)

	// No node lost its certificate.
	for _, node := range nodes {
		leaf := node.Certificate().Leaf
		if leaf == nil || time.Now().After(leaf.NotAfter) {
			t.Errorf("%s holds no valid certificate", node.ID())
		}
	}
	// Every event shipped is stored exactly once, and the chain verifies.
	db, err := store.Open(context.Background(), c.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i, node := range nodes {
		var n, distinct int
		if err := db.QueryRow(`SELECT count(*), count(DISTINCT id) FROM audit_events WHERE dst = $1 AND kind = $2`,
			node.ID().String(), string(audit.KindRequest)).Scan(&n, &distinct); err != nil {
			t.Fatal(err)
		}
		// A shipper stops between batches: what it counted is all it sent.
		if distinct != n || n != shipped[i]*per {
			t.Errorf("%s: %d events stored (%d distinct) for %d batches of %d", node.ID(), n, distinct, shipped[i], per)
		}
	}
	out, errOut, code := (&mesh{t: t}).run("audit", "verify", "--state", c.serving[2].AdminState)
	if code != 0 || !strings.Contains(out, "audit trail intact") {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, errOut)
	}
}
