package audit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"agentmesh/internal/audit"
	"agentmesh/internal/audit/audittest"
	"agentmesh/internal/store"
)

func TestShipDeliversEverythingOnceThroughFailures(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(filepath.Join(t.TempDir(), "mesh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	st, err := audit.NewStore(ctx, db, priv, audit.StoreOptions{})
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
	spool, err := audit.OpenSpool(t.TempDir(), audit.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range total {
		e := audittest.Event(i, base)
		if err := spool.Append(ctx, &e); err != nil {
			t.Fatal(err)
		}
	}
	if err := spool.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var waits []time.Duration
	shipCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- audit.Ship(shipCtx, spool, sender, audit.ShipOptions{
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
	if rep, err := audit.Verify(ctx, db, pub); err != nil || !rep.OK || rep.Events != total {
		t.Fatalf("Verify = %v, %v", rep, err)
	}
}

func TestShipReturnsWhenSpoolCloses(t *testing.T) {
	spool, err := audit.OpenSpool(t.TempDir(), audit.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- audit.Ship(context.Background(), spool, &audittest.Sender{}, audit.ShipOptions{}) }()
	spool.Close()
	if err := <-done; err != nil {
		t.Fatalf("Ship = %v, want nil after Close", err)
	}
}

func TestShipResendsAfterRestartUntilAcknowledged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	spool, err := audit.OpenSpool(dir, audit.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		e := audittest.Event(i, base)
		if err := spool.AppendSync(ctx, &e); err != nil {
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
		done <- audit.Ship(shipCtx, spool, down, audit.ShipOptions{Linger: -1, After: func(time.Duration) <-chan time.Time {
			once.Do(func() { close(tried) })
			return nil // wait forever, until cancelled
		}})
	}()
	<-tried
	cancel()
	<-done
	spool.Close()

	spool, err = audit.OpenSpool(dir, audit.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	up := &audittest.Sender{Delivered: make(chan struct{}, 1)}
	shipCtx, cancel = context.WithCancel(ctx)
	go func() { done <- audit.Ship(shipCtx, spool, up, audit.ShipOptions{}) }()
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
	spool, err := audit.OpenSpool(t.TempDir(), audit.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	appendN := func(from, n int) {
		for i := range n {
			e := audittest.Event(from+i, base)
			if err := spool.Append(ctx, &e); err != nil {
				t.Fatal(err)
			}
		}
		if err := spool.Flush(ctx); err != nil {
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
		done <- audit.Ship(shipCtx, spool, sender, audit.ShipOptions{
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
