package controlclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// follow runs cl.Follow until the test ends and hands its updates over a
// channel; stop cancels it and returns Follow's error.
func follow(t *testing.T, cl *controlclient.Client) (updates <-chan update, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan update)
	done := make(chan error, 1)
	go func() {
		done <- cl.Follow(ctx, func(nm *netmap.Netmap, confirmed time.Time) {
			select {
			case ch <- update{nm, confirmed}:
			case <-ctx.Done():
			}
		})
	}()
	var stopped bool
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return ch, stop
}

type update struct {
	nm        *netmap.Netmap
	confirmed time.Time
}

func TestNetmapAnswersAtOnceWhenBehindAndWaitsForTheNextChange(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	cl := m.Client(m.Join("tool", "files", "tag:docs"))
	ctx := context.Background()
	nm, err := cl.Netmap(ctx, -1)
	if err != nil || nm == nil {
		t.Fatalf("Netmap(-1) = %v, %v", nm, err)
	}
	self, ok := nm.Node("files")
	if !ok || self.ID != cl.ID() || self.Status != netmap.StatusActive || len(self.Tags) != 1 || self.Tags[0] != "tag:docs" {
		t.Fatalf("the node's own entry: %+v (%v)", self, ok)
	}
	// A watch at the current version waits for the next change.
	got := make(chan *netmap.Netmap, 1)
	errc := make(chan error, 1)
	go func() {
		next, err := cl.Netmap(ctx, nm.Version)
		errc <- err
		got <- next
	}()
	m.ApplyPolicy(`{"grants": [{"src": ["*"], "dst": ["tool:files"], "tools": ["*"]}]}`)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	next := <-got
	if next == nil || next.Version <= nm.Version || next.Policy.Version != 1 || !next.Policy.Projected() {
		t.Fatalf("after a policy change: %+v, want a newer netmap with the projected policy", next)
	}
}

func TestNetmapAnswersNothingNewWhenTheLongPollEnds(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{LongPoll: time.Millisecond})
	cl := m.Client(m.Join("agent", "fraud"))
	nm, err := cl.Netmap(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := cl.Netmap(context.Background(), nm.Version)
	if err != nil || again != nil {
		t.Fatalf("Netmap at the current version after the long poll = %+v, %v; want nil, nil", again, err)
	}
}

func TestFollowStartsFromTheCacheAndCachesWhatTheCoordinatorConfirms(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	joined := m.Clock.Now()
	cl := m.Client(dir)
	updates, stop := follow(t, cl)

	first := <-updates
	if first.nm == nil || !first.confirmed.Equal(joined) {
		t.Fatalf("first update: %+v, want the cached netmap confirmed at the join (%v)", first, joined)
	}
	m.Clock.Advance(time.Minute)
	m.Join("agent", "fraud") // any change makes a new version
	second := <-updates
	if second.nm == nil || second.nm.Version <= first.nm.Version || !second.confirmed.Equal(m.Clock.Now()) {
		t.Fatalf("second update: version %v confirmed %v, want a newer netmap confirmed now (%v)", second.nm, second.confirmed, m.Clock.Now())
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow = %v, want context.Canceled", err)
	}
	// The cache holds what was confirmed, for the next start.
	d, err := nodestate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := cl.CachedNetmap()
	if err != nil || cached.Version != second.nm.Version {
		t.Fatalf("cached netmap: %+v, %v; want version %d", cached, err, second.nm.Version)
	}
	if at, err := d.NetmapConfirmed(); err != nil || !at.Equal(second.confirmed) {
		t.Fatalf("cached confirmation %v, %v; want %v", at, err, second.confirmed)
	}
}

func TestFollowKeepsTheCacheWhileTheCoordinatorIsAwayAndResumes(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	cl := m.Client(dir)
	before, err := cl.CachedNetmap()
	if err != nil {
		t.Fatal(err)
	}
	m.Stop()
	updates, _ := follow(t, cl)
	if u := <-updates; u.nm == nil || u.nm.Version != before.Version {
		t.Fatalf("with the coordinator away: %+v, want the cached netmap", u)
	}
	m.Restart()
	m.Clock.Advance(time.Minute)
	m.Join("agent", "fraud")
	for {
		u := <-updates
		if u.nm != nil && u.nm.Version > before.Version {
			if _, ok := u.nm.Node("files"); !ok {
				t.Fatalf("the resumed netmap lacks the node itself: %+v", u.nm)
			}
			break
		}
	}
}

func TestRenewKeepsTheIdentityAndStoresTheNewCertificate(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("agent", "fraud")
	cl := m.Client(dir)
	old := cl.Certificate().Leaf
	m.Clock.Advance(10 * time.Minute)
	tc, err := cl.Renew(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !tc.Leaf.NotBefore.After(old.NotBefore) || tc.Leaf.URIs[0].String() != old.URIs[0].String() {
		t.Fatalf("renewed %v (from %v), old %v (from %v)", tc.Leaf.URIs, tc.Leaf.NotBefore, old.URIs, old.NotBefore)
	}
	if cl.Certificate() != tc {
		t.Fatal("the client does not present the renewed certificate")
	}
	// The state directory holds it, so the next start uses it.
	if again := m.Client(dir); !again.Certificate().Leaf.Equal(tc.Leaf) {
		t.Fatal("the renewed certificate was not stored")
	}
}

func TestARenewedClientIsServedAfterItsFirstCertificateExpires(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	// The coordinator's own certificate, issued at its start, outlives
	// the node's first one by half an hour.
	m.Stop()
	m.Clock.Advance(30 * time.Minute)
	m.Restart()
	cl := m.Client(dir)
	ctx := context.Background()
	// A connection made with the first certificate, kept busy by a watch
	// that is in flight when the certificate is renewed.
	nm, err := cl.Netmap(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	watch := make(chan error, 1)
	go func() { _, err := cl.Netmap(ctx, nm.Version); watch <- err }()
	first := cl.Certificate().Leaf
	m.Clock.Set(first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 2 / 3))
	if _, err := cl.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	m.ApplyPolicy(`{}`) // a new version ends the watch
	if err := <-watch; err != nil {
		t.Fatal(err)
	}
	m.Clock.Set(first.NotAfter.Add(pki.ClockSkew + time.Second))
	if _, err := cl.Netmap(ctx, -1); err != nil {
		t.Fatalf("after the first certificate expired, with a renewed one: %v", err)
	}
}

func TestRenewIfDueRenewsFromTwoThirdsOfTheLifetime(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	cl := m.Client(m.Join("admin", "ops"))
	leaf := cl.Certificate().Leaf
	due := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
	m.Clock.Set(due.Add(-time.Second))
	if err := cl.RenewIfDue(context.Background()); err != nil || cl.Certificate().Leaf != leaf {
		t.Fatalf("before two thirds: renewed (%v)", err)
	}
	m.Clock.Set(due)
	if err := cl.RenewIfDue(context.Background()); err != nil || cl.Certificate().Leaf.Equal(leaf) {
		t.Fatalf("at two thirds: not renewed (%v)", err)
	}
}

func TestRunRenewalRenewsWhenTheClockSaysSo(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	cl := m.Client(m.Join("tool", "files"))
	old := cl.Certificate().Leaf
	ctx, cancel := context.WithCancel(context.Background())
	renewed := make(chan *tls.Certificate, 1)
	done := make(chan error, 1)
	go func() {
		done <- cl.RunRenewal(ctx, m.Clock, func(tc *tls.Certificate) { renewed <- tc })
	}()
	waiters, err := m.Clock.WaitForWaiters(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if w := waiters[0]; !w.After(old.NotBefore) || !w.Before(old.NotAfter) {
		t.Fatalf("renewal scheduled at %v, outside the certificate's life %v..%v", w, old.NotBefore, old.NotAfter)
	}
	m.Clock.Set(waiters[0])
	tc := <-renewed
	if tc.Leaf.Equal(old) || cl.Certificate() != tc {
		t.Fatal("RunRenewal did not swap in a new certificate")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunRenewal = %v, want nil once stopped", err)
	}
}

// events returns n valid events recorded by the node id.
func events(id identity.ID, n int) []audit.Event {
	out := audittest.Events(0, n, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	for i := range out {
		out[i].Dst = id.String()
	}
	return out
}

func TestSendKeepsTheReceiptThatBindsTheBatch(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	cl := m.Client(dir)
	batch := events(cl.ID(), 5)
	if err := cl.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	d, _ := nodestate.Open(dir)
	b, err := os.ReadFile(d.ReceiptPath())
	if err != nil {
		t.Fatal(err)
	}
	r, err := audit.ParseReceipt(b)
	if err != nil {
		t.Fatal(err)
	}
	nm, _ := cl.CachedNetmap()
	pub, err := audit.ParsePublicKey([]byte(nm.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CheckBatch(pub, batch); err != nil {
		t.Fatalf("the kept receipt does not bind the batch sent: %v", err)
	}
	// Sending the batch again adds nothing and is answered as kept.
	if err := cl.Send(context.Background(), batch); err != nil {
		t.Fatalf("re-sent batch: %v", err)
	}
}

func TestSendRefusesAReceiptNotSignedWithTheNetmapsAuditKey(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	cl := m.Client(dir)
	d, _ := nodestate.Open(dir)
	// The node trusts another audit key than the one the coordinator
	// signs with: no receipt can prove the batch was kept.
	nm, err := cl.CachedNetmap()
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	nm.AuditKey = string(audit.EncodePublicKey(other))
	b, _ := json.Marshal(nm)
	if err := d.SaveNetmap(b); err != nil {
		t.Fatal(err)
	}
	err = cl.Send(context.Background(), events(cl.ID(), 3))
	if !errors.Is(err, audit.ErrNotKept) {
		t.Fatalf("Send = %v, want ErrNotKept", err)
	}
	if _, err := os.Stat(d.ReceiptPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a receipt that does not check out was kept (%v)", err)
	}
}

func TestErrorsNameTheCoordinator(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	agent := m.Client(m.Join("agent", "fraud"))
	ctx := context.Background()

	// A refusal says it is the coordinator's, with its stable code.
	err := agent.Register(ctx, []string{"127.0.0.1:1"})
	var ae *controlclient.APIError
	if !errors.As(err, &ae) || ae.Code != "not_serving_kind" || ae.Status != http.StatusForbidden ||
		!strings.HasPrefix(err.Error(), "coordinator refused (not_serving_kind)") {
		t.Fatalf("Register by an agent = %v", err)
	}

	// An unreachable coordinator is named with its address, in words that
	// say what to check rather than a raw dial error.
	m.Stop()
	for name, call := range map[string]func() error{
		"Netmap": func() error { _, err := agent.Netmap(ctx, -1); return err },
		"Call":   func() error { return agent.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, nil) },
		"Stream": func() error { _, err := agent.Stream(ctx, controlapi.PathAudit); return err },
		"Renew":  func() error { _, err := agent.Renew(ctx); return err },
		"Send":   func() error { return agent.Send(ctx, events(agent.ID(), 1)) },
	} {
		err := call()
		want := "cannot reach the coordinator at " + m.URL() + ": is 'agentmesh coordinator' running there"
		if !errors.Is(err, controlclient.ErrUnreachable) || !strings.Contains(fmt.Sprint(err), want) || strings.Contains(fmt.Sprint(err), "dial tcp") {
			t.Errorf("%s with the coordinator down = %v, want ErrUnreachable saying %q", name, err, want)
		}
	}
}

func TestAPIErrorEscapesWhatTheCoordinatorSent(t *testing.T) {
	e := &controlclient.APIError{Status: 400, Code: "bad\x1b[31m", Msg: "line\nbreak \u202eevil"}
	s := e.Error()
	if strings.ContainsAny(s, "\x1b\n\u202e") {
		t.Fatalf("Error() passes control characters through: %q", s)
	}
	if e.Code != "bad\x1b[31m" || e.Msg != "line\nbreak \u202eevil" {
		t.Fatal("the fields do not keep what was received")
	}
}
