package auditstore

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
)

func TestStoreAppendIsIdempotentByID(t *testing.T) {
	s, db, pub := testStore(t, Options{CheckpointEvents: -1})
	ctx := context.Background()
	batch := testEvents(0, 100)
	added, err := s.Append(ctx, batch)
	if err != nil || added != 100 {
		t.Fatalf("Append = %d, %v; want 100", added, err)
	}
	// Re-delivery, overlap and duplicates inside one batch add only what is new.
	tests := []struct {
		name  string
		batch []audit.Event
		want  int
	}{
		{"same batch again", batch, 0},
		{"overlapping batch", testEvents(50, 100), 50},
		{"duplicate inside batch", append(testEvents(150, 1), testEvents(150, 1)...), 1},
	}
	for _, tt := range tests {
		added, err := s.Append(ctx, tt.batch)
		if err != nil || added != tt.want {
			t.Fatalf("%s: Append = %d, %v; want %d", tt.name, added, err, tt.want)
		}
	}
	var n, maxSeq int64
	if err := db.QueryRow(`SELECT count(*), max(seq) FROM audit_events`).Scan(&n, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if n != 151 || maxSeq != 151 {
		t.Fatalf("rows = %d, max seq = %d; want 151 and 151 (no gaps)", n, maxSeq)
	}
	if rep, err := Verify(ctx, db, pub); err != nil || !rep.OK {
		t.Fatalf("Verify = %v, %v", rep, err)
	}
}

func TestStoreAppendRejectsBatchWithInvalidEvent(t *testing.T) {
	s, db, _ := testStore(t, Options{})
	batch := testEvents(0, 3)
	batch[2].ID = "not-an-id"
	if _, err := s.Append(context.Background(), batch); !errors.Is(err, audit.ErrInvalidEvent) {
		t.Fatalf("Append = %v, want audit.ErrInvalidEvent", err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM audit_events`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d rows stored from a rejected batch", n)
	}
}

func TestStoreContinuesChainAfterReopen(t *testing.T) {
	s, db, pub := testStore(t, Options{})
	ctx := context.Background()
	if _, err := s.Append(ctx, testEvents(0, 10)); err != nil {
		t.Fatal(err)
	}
	seq, head := s.Head()
	again, err := New(ctx, db, s.signer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if seq2, head2 := again.Head(); seq2 != seq || head2 != head {
		t.Fatalf("reopened head %d %x, want %d %x", seq2, head2, seq, head)
	}
	if _, err := again.Append(ctx, testEvents(10, 10)); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(ctx, db, pub); err != nil || !rep.OK || rep.Events != 20 {
		t.Fatalf("Verify = %v, %v", rep, err)
	}
}

func TestStoreSignsCheckpointEveryNEvents(t *testing.T) {
	s, db, pub := testStore(t, Options{CheckpointEvents: 25})
	ctx := context.Background()
	for i := range 10 {
		if _, err := s.Append(ctx, testEvents(i*10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Verify(ctx, db, pub)
	if err != nil || !rep.OK {
		t.Fatalf("Verify = %v, %v", rep, err)
	}
	if rep.Checkpoints != 3 || rep.SignedThrough != 90 {
		t.Fatalf("checkpoints %d signed through %d, want 3 through 90", rep.Checkpoints, rep.SignedThrough)
	}
	// Nothing new: no new checkpoint.
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM audit_checkpoints`).Scan(&n)
	if n != 4 {
		t.Fatalf("%d checkpoints, want 4", n)
	}
}

func TestStoreRunCheckpointsOnTimerAndOnStop(t *testing.T) {
	ticks := make(chan chan time.Time)
	now := testBase
	s, db, _ := testStore(t, Options{
		CheckpointEvents: -1,
		CheckpointEvery:  time.Minute,
		Now:              func() time.Time { return now },
		After: func(d time.Duration) <-chan time.Time {
			c := make(chan time.Time, 1)
			ticks <- c
			return c
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	count := func() (n int) {
		db.QueryRow(`SELECT count(*) FROM audit_checkpoints`).Scan(&n)
		return n
	}

	tick := <-ticks
	if _, err := s.Append(context.Background(), testEvents(0, 5)); err != nil {
		t.Fatal(err)
	}
	tick <- now
	tick = <-ticks // the checkpoint for the tick is done before Run waits again
	if n := count(); n != 1 {
		t.Fatalf("%d checkpoints after one tick, want 1", n)
	}
	if _, err := s.Append(context.Background(), testEvents(5, 5)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d checkpoints after stop, want 2", n)
	}
}

func TestStoreRejectsNonEd25519Signer(t *testing.T) {
	_, db, _ := testStore(t, Options{})
	if _, err := New(context.Background(), db, nil, Options{}); !errors.Is(err, audit.ErrBadKey) {
		t.Fatalf("New(nil signer) = %v, want audit.ErrBadKey", err)
	}
}

func TestPublicKeyPEMRoundTrips(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := audit.EncodePublicKey(pub)
	if !bytes.HasPrefix(pemBytes, []byte("-----BEGIN PUBLIC KEY-----")) {
		t.Fatalf("not PEM: %s", pemBytes)
	}
	got, err := audit.ParsePublicKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pub) {
		t.Fatal("parsed key differs")
	}
	if _, err := audit.ParsePublicKey([]byte("garbage")); !errors.Is(err, audit.ErrBadKey) {
		t.Fatalf("audit.ParsePublicKey(garbage) = %v, want audit.ErrBadKey", err)
	}
}

func TestStoreAppendedClosesOnlyWhenEventsAreAdded(t *testing.T) {
	ctx := context.Background()
	s, _, _ := testStore(t, Options{})
	ch := s.Appended()
	if _, err := s.Append(ctx, testEvents(0, 3)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Appended was not closed by an Append that stored events")
	}
	ch = s.Appended()
	if added, err := s.Append(ctx, testEvents(0, 3)); err != nil || added != 0 {
		t.Fatalf("re-delivery: added %d, %v", added, err)
	}
	select {
	case <-ch:
		t.Fatal("Appended was closed by an Append that stored nothing")
	default:
	}
}

// TestSeveralWritersShareOneChain is several coordinators on one database,
// each with its own Store, ingesting and checkpointing at once: the chain
// stays one chain (Verify passes), every event is stored exactly once, and
// no head is signed twice.
func TestSeveralWritersShareOneChain(t *testing.T) {
	ctx := context.Background()
	target := testTarget(t)
	first := openTarget(t, target)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const writers, batches, per = 3, 20, 5
	stores := make([]*Store, writers)
	for i := range stores {
		db := first
		if i > 0 {
			// Each writer on its own handle, as another process would be.
			db = openTarget(t, target)
		}
		if stores[i], err = New(ctx, db, priv, Options{Self: testCoordinator, CheckpointEvents: 7}); err != nil {
			t.Fatal(err)
		}
	}
	senders := []string{toolA, toolB, "spiffe://mesh.test/tool/c"}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i, s := range stores {
		wg.Go(func() {
			for b := range batches {
				if _, err := s.Ingest(ctx, senders[i], eventsFor(senders[i], b*per, per)); err != nil {
					errs <- err
					return
				}
				if b%3 == 0 {
					if err := s.Checkpoint(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, first, pub)
	if err != nil || !rep.OK {
		t.Fatalf("verify: %v %v", rep, err)
	}
	if want := int64(writers * batches * per); rep.Events != want {
		t.Fatalf("%d events in the chain, want %d", rep.Events, want)
	}
	var heads, distinct int
	if err := first.QueryRow(`SELECT count(*), count(DISTINCT seq) FROM audit_checkpoints`).Scan(&heads, &distinct); err != nil {
		t.Fatal(err)
	}
	if heads != distinct {
		t.Fatalf("%d checkpoints sign %d heads: a head was signed twice", heads, distinct)
	}
}
