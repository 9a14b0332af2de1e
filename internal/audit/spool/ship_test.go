package spool_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/audit/spool"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/store"
)

// The test double must be a Sender.
var _ spool.Sender = (*audittest.Sender)(nil)

func TestShipDeliversEverythingOnceThroughFailures(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenSQLite(filepath.Join(t.TempDir(), "mesh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	st, err := auditstore.New(ctx, db, priv, auditstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const total = 2500
	sender := &audittest.Sender{
		FailFirst: 3,
		Deliver: func(ctx context.Context, events []audit.Event) error {
			_, err := st.Append(ctx, events)
			return err
		},
		Delivered: make(chan struct{}, 1),
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range total {
		e := audittest.Event(i, base)
		if err := sp.Append(ctx, &e); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var waits []time.Duration
	shipCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- spool.Ship(shipCtx, sp, sender, spool.ShipOptions{
			MaxBatch:   1000,
			Linger:     -1, // the waits counted below are backoffs only
			MinBackoff: time.Second,
			MaxBackoff: 3 * time.Second,
			Jitter:     func() float64 { return 0.5 },
			After: func(d time.Duration) <-chan time.Time {
				mu.Lock()
				waits = append(waits, d)
				mu.Unlock()
				c := make(chan time.Time, 1)
				c <- time.Time{} // time passes at once
				return c
			},
		})
	}()
	for len(sender.Events()) < total {
		<-sender.Delivered
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Ship = %v, want context.Canceled", err)
	}

	got := sender.Events()
	if len(got) != total {
		t.Fatalf("delivered %d events, want %d", len(got), total)
	}
	seen := map[string]bool{}
	for _, e := range got {
		if seen[e.ID] {
			t.Fatalf("event %s delivered twice", e.ID)
		}
		seen[e.ID] = true
	}
	var rows int
	db.QueryRow(`SELECT count(*) FROM audit_events`).Scan(&rows)
	if rows != total {
		t.Fatalf("store has %d rows, want %d", rows, total)
	}
	// Backoff doubles up to the cap, with jitter between half and all of it.
	wantWaits := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 2250 * time.Millisecond}
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != len(wantWaits) {
		t.Fatalf("waits %v, want %v", waits, wantWaits)
	}
	for i := range waits {
		if waits[i] != wantWaits[i] {
			t.Fatalf("waits %v, want %v", waits, wantWaits)
		}
	}

	// Re-delivery (a lost acknowledgement) adds no rows.
	added, err := st.Append(ctx, got[:1000])
	if err != nil || added != 0 {
		t.Fatalf("re-delivery added %d rows (%v)", added, err)
	}
	if rep, err := auditstore.Verify(ctx, db, pub); err != nil || !rep.OK || rep.Events != total {
		t.Fatalf("Verify = %v, %v", rep, err)
	}
}

func TestShipReturnsWhenSpoolCloses(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- spool.Ship(context.Background(), sp, &audittest.Sender{}, spool.ShipOptions{}) }()
	sp.Close()
	if err := <-done; err != nil {
		t.Fatalf("Ship = %v, want nil after Close", err)
	}
}

func TestShipResendsAfterRestartUntilAcknowledged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		e := audittest.Event(i, base)
		if err := sp.AppendSync(ctx, &e); err != nil {
			t.Fatal(err)
		}
	}
	// The coordinator never answers: nothing is acknowledged.
	down := &audittest.Sender{FailFirst: 1 << 30}
	shipCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	tried := make(chan struct{})
	var once sync.Once
	go func() {
		done <- spool.Ship(shipCtx, sp, down, spool.ShipOptions{Linger: -1, After: func(time.Duration) <-chan time.Time {
			once.Do(func() { close(tried) })
			return nil // wait forever, until cancelled
		}})
	}()
	<-tried
	cancel()
	<-done
	sp.Close()

	sp, err = spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	up := &audittest.Sender{Delivered: make(chan struct{}, 1)}
	shipCtx, cancel = context.WithCancel(ctx)
	go func() { done <- spool.Ship(shipCtx, sp, up, spool.ShipOptions{}) }()
	for len(up.Events()) < 10 {
		<-up.Delivered
	}
	cancel()
	<-done
	if n := len(up.Events()); n != 10 {
		t.Fatalf("after restart %d events delivered, want 10", n)
	}
}

func TestShipLingersForAPartialBatchToFill(t *testing.T) {
	ctx := context.Background()
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	appendN := func(from, n int) {
		for i := range n {
			e := audittest.Event(from+i, base)
			if err := sp.Append(ctx, &e); err != nil {
				t.Fatal(err)
			}
		}
		if err := sp.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	appendN(0, 10)
	waiting := make(chan time.Duration, 1)
	fire := make(chan time.Time, 1)
	sender := &audittest.Sender{Delivered: make(chan struct{}, 1)}
	shipCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- spool.Ship(shipCtx, sp, sender, spool.ShipOptions{
			MaxBatch: 100,
			Linger:   250 * time.Millisecond,
			After: func(d time.Duration) <-chan time.Time {
				waiting <- d
				return fire
			},
		})
	}()
	if d := <-waiting; d != 250*time.Millisecond {
		t.Fatalf("Ship waited %v, want the linger", d)
	}
	if n := sender.Calls(); n != 0 {
		t.Fatalf("%d sends before the linger ended", n)
	}
	appendN(10, 15) // arrives while Ship lingers
	fire <- time.Time{}
	<-sender.Delivered
	cancel()
	<-done
	if calls, got := sender.Calls(), len(sender.Events()); calls != 1 || got != 25 {
		t.Fatalf("%d sends carrying %d events, want 1 send of 25", calls, got)
	}
}

// TestShipRecordsMetrics: failed sends and shipped events are counted, and
// the oldest waiting event is cleared once everything is acknowledged.
func TestShipRecordsMetrics(t *testing.T) {
	ctx := context.Background()
	sender := &audittest.Sender{FailFirst: 2, Delivered: make(chan struct{}, 1)}
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	const total = 5
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range total {
		e := audittest.Event(i, base)
		if err := sp.Append(ctx, &e); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	m.WatchSpool(sp.Pending)
	value := func(name string) float64 {
		t.Helper()
		v, err := m.Value(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := value("agentmesh_audit_spool_events"); v != total {
		t.Fatalf("spool depth %v before shipping, want %d", v, total)
	}
	shipCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- spool.Ship(shipCtx, sp, sender, spool.ShipOptions{Linger: -1, Metrics: m,
			After: func(time.Duration) <-chan time.Time {
				c := make(chan time.Time, 1)
				c <- time.Time{}
				return c
			}})
	}()
	for len(sender.Events()) < total {
		<-sender.Delivered
	}
	cancel()
	<-done
	if v := value("agentmesh_audit_ship_errors_total"); v != 2 {
		t.Errorf("ship errors %v, want 2", v)
	}
	if v := value("agentmesh_audit_shipped_events_total"); v != total {
		t.Errorf("shipped %v, want %d", v, total)
	}
	if v := value("agentmesh_audit_spool_events"); v != 0 {
		t.Errorf("spool depth %v after everything was acknowledged", v)
	}
	if v := value("agentmesh_audit_spool_oldest_event_age_seconds"); v != 0 {
		t.Errorf("oldest waiting event %v s old with nothing waiting", v)
	}
}
