package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// seeded tells c that rows were written to its database behind the
// registry's back (benchmarks seed meshes that way): its memory copy is
// reloaded before the next publish.
func seeded(c *Coordinator) {
	c.reg.mu.Lock()
	c.reg.doubt()
	c.reg.mu.Unlock()
}

// startBare starts a real coordinator (SQLite, TLS listener) on a clock
// the test moves.
func startBare(t *testing.T) (*Coordinator, *pkitest.Clock) {
	t.Helper()
	clock := pkitest.NewClock(time.Now())
	c, err := Start(context.Background(), Config{DataDir: filepath.Join(t.TempDir(), "data"), Listen: "127.0.0.1:0",
		TrustDomain: "test.mesh", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, clock
}

// reusableKey stores a reusable agent key and returns its id; the tests
// here decide joins themselves, so its secret is never checked.
func reusableKey(t *testing.T, c *Coordinator) string {
	t.Helper()
	now := time.Now().UTC()
	k := keyRecord{KeyInfo: controlapi.KeyInfo{ID: "test-key", Kind: "agent", Tags: []string{}, Reusable: true,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "test"}, SecretHash: "unused"}
	if err := c.reg.createKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return k.ID
}

// checkAgainstDisk fails unless the registry's memory copy and the
// published netmap are exactly what a fresh load from SQLite gives at the
// time of the last publish (a publish with nothing to include returns
// without one, so a revocation ages out of the netmap with the next
// change, as it did when every publish read the registry back).
func checkAgainstDisk(t *testing.T, c *Coordinator, step string) {
	t.Helper()
	ctx := context.Background()
	c.reg.mu.Lock()
	now := c.reg.mem.asOf
	c.reg.mu.Unlock()
	fresh, err := c.reg.loadNodes(ctx, c.td, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.reg.policy(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.reg.mu.Lock()
	mem, memPolicy, stale := append([]nodeRow(nil), c.reg.mem.nodes...), c.reg.mem.policy, c.reg.mem.stale
	c.reg.mu.Unlock()
	if !stale && !reflect.DeepEqual(mem, fresh) {
		t.Fatalf("after %s: memory holds\n%+v\nSQLite\n%+v", step, mem, fresh)
	}
	if !stale && memPolicy != p {
		t.Fatalf("after %s: memory holds policy %+v, SQLite %+v", step, memPolicy, p)
	}
	want := make([]netmap.Node, len(fresh))
	for i := range fresh {
		want[i] = fresh[i].Node
	}
	nm := c.Netmap()
	if !reflect.DeepEqual(nm.Nodes, want) {
		t.Fatalf("after %s: the netmap holds\n%+v\nSQLite\n%+v", step, nm.Nodes, want)
	}
	if nm.Policy.Version != p.Version || nm.Policy.Document != p.Document {
		t.Fatalf("after %s: the netmap has policy %d, SQLite %d", step, nm.Policy.Version, p.Version)
	}
	if idx := newMeshIndex(nm); !reflect.DeepEqual(c.index.services, idx.services) {
		t.Fatalf("after %s: services at %v, want %v", step, c.index.services, idx.services)
	}
}

// TestCommittedSetEqualsAFreshLoadAfterRandomChanges drives a real
// coordinator through random sequences of joins (of names that are free,
// taken, or were revoked), registrations, re-tags, revocations, policy
// applies, failed writes, writes whose outcome is in doubt, and clock
// jumps that age revocations out, publishing after one or several of
// them; after every publish the registry's memory copy and the netmap
// equal a fresh load from SQLite, and versions only grow.
func TestCommittedSetEqualsAFreshLoadAfterRandomChanges(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			c, clock := startBare(t)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(seed, 16))
			name := func() string { return fmt.Sprintf("n%d", rng.IntN(12)) }
			kinds := []identity.Kind{identity.KindAgent, identity.KindTool, identity.KindModel}
			key := reusableKey(t, c)
			version := c.Netmap().Version
			for step := range 250 {
				op := ""
				var err error
				switch k := rng.IntN(10); k {
				case 0, 1, 2:
					op = "join"
					_, err = c.reg.join(ctx, joinAttempt{keyID: key, decide: func(keyRecord, bool) (netmap.Node, error) {
						tags, _ := identity.ParseTags([]string{fmt.Sprintf("tag:t%d", rng.IntN(3))})
						return netmap.Node{Name: identity.Name(name()), Kind: kinds[rng.IntN(3)], Tags: tags, Incarnation: newIncarnation()}, nil
					}}, clock.Now())
				case 3:
					op = "register"
					err = c.reg.setAddrs(ctx, name(), []string{fmt.Sprintf("h%d.internal:7800", rng.IntN(5))})
				case 4:
					op = "re-tag"
					err = c.reg.setTags(ctx, name(), []string{fmt.Sprintf("tag:t%d", rng.IntN(3))})
				case 5:
					op = "revoke"
					err = c.reg.revokeNode(ctx, name(), clock.Now())
				case 6:
					op = "policy apply"
					_, err = c.reg.addPolicy(ctx, fmt.Sprintf(`{"grants": [{"src": ["tag:t%d"], "dst": ["*"]}]}`, rng.IntN(3)), "test", "", clock.Now())
				case 7:
					op = "clock jump"
					clock.Advance(time.Duration(rng.IntN(8)) * time.Hour)
				case 8:
					// A write that fails before it commits changes nothing.
					op = "cancelled write"
					cctx, cancel := context.WithCancel(ctx)
					cancel()
					err = c.reg.setTags(cctx, name(), []string{"tag:never"})
					if err == nil {
						t.Fatal("a write with a cancelled context succeeded")
					}
					err = nil
				case 9:
					// A write whose outcome the registry cannot know (its
					// commit failed after reaching the disk): the copy is
					// reloaded before anything is published.
					op = "write in doubt"
					if _, err := c.db.ExecContext(ctx, `UPDATE nodes SET tags = '["tag:doubt"]' WHERE name = ?`, name()); err != nil {
						t.Fatal(err)
					}
					seeded(c)
				}
				var je *joinError
				if err != nil && !errors.Is(err, errNotFound) && !errors.As(err, &je) {
					t.Fatalf("step %d, %s: %v", step, op, err)
				}
				if rng.IntN(3) == 0 {
					continue // publish several changes at once
				}
				if err := c.publish(ctx); err != nil {
					t.Fatal(err)
				}
				if v := c.Netmap().Version; v < version {
					t.Fatalf("step %d: netmap version went from %d to %d", step, version, v)
				} else {
					version = v
				}
				checkAgainstDisk(t, c, fmt.Sprintf("step %d (%s)", step, op))
			}
		})
	}
}

// TestConcurrentChangesArePublishedCoalescedAndInOrder has changes made
// and published from many goroutines at once while a watcher follows the
// netmap: every change's publish returns with a netmap that includes it,
// the watcher never sees a version go back, fewer netmaps than changes
// may be published, and the last one equals a fresh load.
func TestConcurrentChangesArePublishedCoalescedAndInOrder(t *testing.T) {
	c, clock := startBare(t)
	ctx := context.Background()
	key := reusableKey(t, c)
	first := c.Netmap().Version
	stop := make(chan struct{})
	watched := make(chan error, 1)
	go func() {
		last := int64(0)
		for {
			c.mu.Lock()
			cur, changed := c.current, c.changed
			c.mu.Unlock()
			if cur.Version < last {
				watched <- fmt.Errorf("version went from %d to %d", last, cur.Version)
				return
			}
			last = cur.Version
			select {
			case <-changed:
			case <-stop:
				watched <- nil
				return
			}
		}
	}()
	const writers, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				inc := newIncarnation()
				_, err := c.reg.join(ctx, joinAttempt{keyID: key, decide: func(keyRecord, bool) (netmap.Node, error) {
					return netmap.Node{Name: identity.Name(fmt.Sprintf("w%d-%d", w, i)), Kind: identity.KindAgent, Tags: []identity.Tag{}, Incarnation: inc}, nil
				}}, clock.Now())
				if err == nil {
					err = c.publish(ctx)
				}
				if err == nil && position(c.Netmap().Nodes, netmap.Node{Name: identity.Name(fmt.Sprintf("w%d-%d", w, i)), Incarnation: inc}) < 0 {
					err = fmt.Errorf("w%d-%d: publish returned before its netmap held the node", w, i)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkAgainstDisk(t, c, "concurrent joins")
	t.Logf("%d joins, %d netmaps published", writers*each, c.Netmap().Version-first)
}
