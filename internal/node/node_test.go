package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitView waits for a view that satisfies cond, failing the test after a
// bound (a node whose coordinator never answers would wait for ever).
func waitView(t *testing.T, n *node.Node, what string, cond func(node.View) bool) node.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := n.WaitView(ctx, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v (view: %+v)", what, err, v)
	}
	return v
}

func start(t *testing.T, dir string, o node.Options) *node.Node {
	t.Helper()
	n, err := node.Start(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func hasNetmap(v node.View) bool { return v.Netmap != nil }

func TestStartServesTheCachedViewWhileTheCoordinatorIsAway(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	joined := m.Clock.Now()
	m.Stop()
	m.Clock.Advance(10 * time.Minute)

	n := start(t, dir, node.Options{Clock: m.Clock})
	v := waitView(t, n, "the cached view", hasNetmap)
	if _, ok := v.Netmap.Node("files"); !ok || !v.Confirmed.Equal(joined) || v.Stale {
		t.Fatalf("view from the cache: %+v, want the node itself, confirmed at the join, not stale", v)
	}
	if n.ID().Name != "files" {
		t.Fatalf("ID = %v", n.ID())
	}
}

func TestStartFromACacheConfirmedLongerThanALifetimeAgoIsStale(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	m.Stop()
	d, err := nodestate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SaveNetmapConfirmed(m.Clock.Now().Add(-2 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	n := start(t, dir, node.Options{Clock: m.Clock})
	if v := waitView(t, n, "the cached view", hasNetmap); !v.Stale {
		t.Fatalf("a view last confirmed two lifetimes ago: %+v, want stale", v)
	}
}

func TestViewGoesStaleWithoutConfirmationAndFreshAtTheNextAnswer(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{}) // long polls outlast the test
	dir := m.Join("tool", "files")
	views := make(chan node.View, 16)
	renewed := make(chan *tls.Certificate, 4)
	n := start(t, dir, node.Options{Clock: m.Clock,
		OnView:        func(v node.View) { views <- v },
		OnCertificate: func(tc *tls.Certificate) { renewed <- tc }})
	first := waitView(t, n, "the first view", hasNetmap)
	if first.Stale {
		t.Fatalf("a view just confirmed is stale: %+v", first)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Two timers on the clock: renewal (about two thirds of the lifetime)
	// and the view's expiry (one lifetime after its confirmation).
	waiters, err := m.Clock.WaitForWaiters(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := first.Confirmed.Add(first.Netmap.CertTTL); !waiters[1].After(want) || waiters[1].After(want.Add(time.Second)) {
		t.Fatalf("timers at %v, want the expiry just after %v", waiters, want)
	}
	// Renewal keeps the node's certificate (and the admin's) valid; it
	// does not confirm the view. The coordinator renews its own server
	// certificate on the wall clock, so on this clock it expires with the
	// view: the admin opens the connection it applies the policy over
	// now, while the server's certificate is still valid.
	m.Clock.Set(waiters[0])
	<-renewed
	if _, err := m.Admin.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Admin.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n.View().Stale {
		t.Fatal("stale before a lifetime without confirmation")
	}
	m.Clock.Set(waiters[1])
	stale := waitView(t, n, "the view going stale", func(v node.View) bool { return v.Stale })
	if !stale.Confirmed.Equal(first.Confirmed) {
		t.Fatalf("stale view confirmed at %v, want the first confirmation %v", stale.Confirmed, first.Confirmed)
	}
	// The coordinator answers again: the view is fresh, with the policy.
	m.ApplyPolicy(`{"grants": [{"src": ["*"], "dst": ["tool:files"], "tools": ["read"]}]}`)
	fresh := waitView(t, n, "a fresh view", func(v node.View) bool { return !v.Stale && v.Policy != nil })
	if !fresh.Confirmed.Equal(m.Clock.Now()) || fresh.Netmap.Version <= first.Netmap.Version {
		t.Fatalf("fresh view %+v, want the new netmap confirmed now", fresh)
	}
	// OnView was told of each change, in order: fresh, stale, fresh again.
	for i, want := range []bool{false, true, false} {
		for {
			var v node.View
			select {
			case v = <-views:
			case <-ctx.Done():
				t.Fatalf("OnView was not told of change %d (stale %v)", i, want)
			}
			if v.Stale == want {
				break
			}
			if i == 0 {
				t.Fatalf("OnView's first view was stale: %+v", v)
			}
			// Later views may repeat the state before the change.
		}
	}
}

func TestCloseIsIdempotentAndStopsWhatStartStarted(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	before := goleak.IgnoreCurrent()
	n, err := node.Start(context.Background(), dir, node.Options{Clock: m.Clock, Audit: true})
	if err != nil {
		t.Fatal(err)
	}
	waitView(t, n, "the first view", hasNetmap)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	goleak.VerifyNone(t, before)
	e := &audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Time: m.Clock.Now(), Kind: audit.KindRequest}
	if err := n.Record(context.Background(), e); err == nil {
		t.Fatal("Record after Close succeeded")
	}
	// The spool is free again: the next start opens it.
	again := start(t, dir, node.Options{Clock: m.Clock, Audit: true})
	waitView(t, again, "the first view after a restart", hasNetmap)
}

func TestRecordStampsThisNodeAndRefusesAnotherRecorder(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	n := start(t, m.Join("tool", "files"), node.Options{Clock: m.Clock, Audit: true})
	ev := func() *audit.Event {
		return &audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Time: m.Clock.Now(), Kind: audit.KindRequest, Decision: audit.Allow}
	}
	e := ev()
	if err := n.Record(context.Background(), e); err != nil || e.Dst != n.ID().String() {
		t.Fatalf("Record = %v, dst %q; want this node (%s)", err, e.Dst, n.ID())
	}
	other := ev()
	other.Dst = "spiffe://test.mesh/tool/ledger"
	if err := n.Record(context.Background(), other); err == nil || !strings.Contains(err.Error(), "not this node") {
		t.Fatalf("Record of another node's event = %v", err)
	}

	agent := start(t, m.Join("agent", "fraud"), node.Options{Clock: m.Clock})
	if err := agent.Record(context.Background(), ev()); err == nil {
		t.Fatal("a node started without a spool recorded an event")
	}
}

func TestStartRefusesACertificateThatExpiredOnItsClock(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("agent", "fraud")
	m.Clock.Advance(time.Hour + pki.ClockSkew + time.Second)
	n, err := node.Start(context.Background(), dir, node.Options{Clock: m.Clock})
	if err == nil {
		n.Close()
		t.Fatal("started with an expired certificate")
	}
	if !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "join again") {
		t.Fatalf("Start = %v, want it to say the certificate expired and to join again", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// TestSecondGatewayOnOneStateIsRefusedWithTheFirstNamed: a node that
// records audit events (a gateway) holds its state directory; a second
// one is refused before it writes anything, told who holds it and where
// it listens, while connectors (no Audit) still run side by side.
func TestSecondGatewayOnOneStateIsRefusedWithTheFirstNamed(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	first := start(t, dir, node.Options{Clock: m.Clock, Audit: true})
	first.Listening("127.0.0.1:7801")
	n, err := node.Start(context.Background(), dir, node.Options{Clock: m.Clock, Audit: true, Command: "agentmesh serve"})
	if err == nil {
		n.Close()
		t.Fatal("a second gateway started on a state directory in use")
	}
	want := fmt.Sprintf("node state directory %s is in use by agentmesh serve (pid %d, listening on 127.0.0.1:7801, since %s); stop it first",
		dir, os.Getpid(), m.Clock.Now().Format(time.RFC3339))
	if !errors.Is(err, dirlock.ErrInUse) || err.Error() != want {
		t.Fatalf("second gateway:\n got %v\nwant %s", err, want)
	}
	start(t, dir, node.Options{Clock: m.Clock})
	start(t, dir, node.Options{Clock: m.Clock})
	first.Close()
	start(t, dir, node.Options{Clock: m.Clock, Audit: true}) // Close released it
}
