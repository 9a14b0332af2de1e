package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
)

// appendAll appends events and flushes them.
func appendAll(t *testing.T, s *Spool, events []audit.Event) {
	t.Helper()
	ctx := context.Background()
	for i := range events {
		if err := s.Append(ctx, &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// drain reads every pending event without acknowledging.
func drain(t *testing.T, s *Spool) []audit.Event {
	t.Helper()
	n := s.Pending()
	if n == 0 {
		return nil
	}
	b, err := s.Next(context.Background(), int(n))
	if err != nil {
		t.Fatal(err)
	}
	return b.Events
}

func wantIDs(t *testing.T, got []audit.Event, from, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d events, want %d", len(got), n)
	}
	for i, e := range got {
		if want := testEvent(from + i).ID; e.ID != want {
			t.Fatalf("event %d has id %s, want %s", i, e.ID, want)
		}
	}
}

func TestSpoolKeepsEventsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, testEvents(0, 300))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(segs) < 2 {
		t.Fatalf("%d segments, want rotation into several", len(segs))
	}
	s = openTestSpool(t, dir, Options{SegmentSize: 4 << 10})
	got := drain(t, s)
	wantIDs(t, got, 0, 300)
	if got[5] != testEvent(5) {
		t.Fatalf("event changed on disk:\n%+v\n%+v", got[5], testEvent(5))
	}
}

func TestSpoolTruncatesTornTailAndKeepsEarlierRecords(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
	}{
		{"partial header", func(t *testing.T, path string, _ int64) { appendBytes(t, path, []byte{0, 0, 1}) }},
		{"partial payload", func(t *testing.T, path string, _ int64) {
			rec, err := encodeRecord(ptr(testEvent(99)))
			if err != nil {
				t.Fatal(err)
			}
			appendBytes(t, path, rec[:len(rec)/2])
		}},
		{"zero-filled tail", func(t *testing.T, path string, _ int64) { appendBytes(t, path, make([]byte, 4096)) }},
		{"last record flipped", func(t *testing.T, path string, size int64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := []byte{0}
			if _, err := f.ReadAt(b, size-3); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x40
			if _, err := f.WriteAt(b, size-3); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			appendAll(t, s, testEvents(0, 10))
			s.Close()
			path := segmentPath(dir, 0)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			tt.damage(t, path, fi.Size())
			s = openTestSpool(t, dir, Options{})
			want := 10
			if tt.name == "last record flipped" {
				want = 9
			}
			wantIDs(t, drain(t, s), 0, want)
			// The spool keeps working after the repair.
			appendAll(t, s, testEvents(100, 1))
			got := drain(t, s)
			if got[len(got)-1].ID != testEvent(100).ID {
				t.Fatalf("event appended after repair is missing")
			}
		})
	}
}

func TestSpoolReportsDamageBeforeTheTailAsCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, testEvents(0, 50))
	s.Close()
	f, err := os.OpenFile(segmentPath(dir, 0), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XX"), 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if s, err := Open(dir, Options{SegmentSize: 2 << 10}); !errors.Is(err, ErrCorrupt) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}

func TestSpoolAckSurvivesReopenAndDeletesSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 10}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, testEvents(0, 200))
	before, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	b, err := s.Next(context.Background(), 150)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, b.Events, 0, 150)
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b); err != nil {
		t.Fatalf("repeated Ack: %v", err)
	}
	after, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(after) >= len(before) {
		t.Fatalf("segments %d -> %d: acknowledged segments not deleted", len(before), len(after))
	}
	s.Close()
	s = openTestSpool(t, dir, opts)
	wantIDs(t, drain(t, s), 150, 50)
}

func TestSpoolNextRepeatsUntilAck(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), Options{})
	appendAll(t, s, testEvents(0, 5))
	ctx := context.Background()
	first, err := s.Next(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Next(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, first.Events, 0, 3)
	wantIDs(t, again.Events, 0, 3)
	if err := s.Ack(first); err != nil {
		t.Fatal(err)
	}
	rest, err := s.Next(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, rest.Events, 3, 2)
	// A batch that skips unacknowledged events cannot be acked.
	if err := s.Ack(Batch{spool: s, from: 4, to: 5}); !errors.Is(err, ErrAckMismatch) {
		t.Fatalf("Ack of a gap = %v, want ErrAckMismatch", err)
	}
	other := openTestSpool(t, t.TempDir(), Options{})
	if err := other.Ack(rest); !errors.Is(err, ErrAckMismatch) {
		t.Fatalf("Ack on another spool = %v, want ErrAckMismatch", err)
	}
}

func TestSpoolNextWaitsForDurableEvents(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), Options{})
	got := make(chan Batch, 1)
	errc := make(chan error, 1)
	go func() {
		b, err := s.Next(context.Background(), 10)
		got <- b
		errc <- err
	}()
	e := testEvent(0)
	if err := s.AppendSync(context.Background(), &e); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	wantIDs(t, b.Events, 0, 1)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(ctx, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with cancelled ctx = %v", err)
	}
}

func TestSpoolAppendIsInTheFileBeforeItReturns(t *testing.T) {
	// The syncer is held, so nothing is fsynced: the record must still be
	// in the segment file, where a killed process cannot lose it.
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{beforeSync: func() {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}})
	defer close(release)
	e := testEvent(0)
	if err := s.Append(context.Background(), &e); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(segs[len(segs)-1].path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(e.ID)) {
		t.Fatalf("event %s is not in the segment file after Append returned", e.ID)
	}
	<-entered
	if n := s.Pending(); n != 0 {
		t.Fatalf("Pending = %d before the fsync, want 0 (Next hands out fsynced events only)", n)
	}
}

func TestSpoolFlushWaitsForFsyncAndGivesUpWithCtx(t *testing.T) {
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	s := openTestSpool(t, t.TempDir(), Options{
		SyncInterval: MaxSyncInterval,
		beforeSync: func() {
			entered <- struct{}{}
			<-release
		},
	})
	ctx := context.Background()
	e0 := testEvent(0)
	if err := s.Append(ctx, &e0); err != nil {
		t.Fatal(err)
	}
	<-entered // the syncer is about to fsync e0 and waits

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Flush(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with cancelled ctx = %v, want context.Canceled", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Flush(ctx) }()
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(release)
	wantIDs(t, drain(t, s), 0, 1)
}

func TestSpoolCloseFsyncsWrittenEventsAndRefusesLaterAppends(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SyncInterval: MaxSyncInterval})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e0, e1, e2 := testEvent(0), testEvent(1), testEvent(2)
	for _, e := range []*audit.Event{&e0, &e1} {
		if err := s.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, &e2); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush after Close = %v, want nil (everything was synced)", err)
	}
	s = openTestSpool(t, dir, Options{})
	wantIDs(t, drain(t, s), 0, 2)
}

func TestSpoolRejectsInvalidEventAndSecondOpener(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{})
	bad := testEvent(0)
	bad.Kind = "nonsense"
	if err := s.Append(context.Background(), &bad); !errors.Is(err, audit.ErrInvalidEvent) {
		t.Fatalf("Append of invalid event = %v, want audit.ErrInvalidEvent", err)
	}
	if s2, err := Open(dir, Options{}); err == nil {
		s2.Close()
		t.Fatal("a second Open of the same directory succeeded")
	}
}

func TestSpoolRejectsMalformedAckFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ackFile), []byte("12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestSpoolAckWithoutCloseRedeliversAfterCrash pins the trade made for
// speed: within one segment the ack file is written at Close, not after
// every batch, so a crash re-delivers acknowledged events (the coordinator
// drops them by id) and never loses an unacknowledged one.
func TestSpoolAckWithoutCloseRedeliversAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, testEvents(0, 20))
	b, err := s.Next(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(b); err != nil {
		t.Fatal(err)
	}
	// Copy the directory as a crash would leave it: before Close.
	crashed := t.TempDir()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(crashed, e.Name()), data, 0o600)
	}
	s.Close()
	wantIDs(t, drain(t, openTestSpool(t, crashed, Options{})), 0, 20)
	wantIDs(t, drain(t, openTestSpool(t, dir, Options{})), 10, 10)
}

func TestSpoolReadsWhileTheActiveSegmentGrows(t *testing.T) {
	// Shipping reads the active segment while Appends go on writing it: the
	// reader must never buffer the allocated space beyond the records.
	s := openTestSpool(t, t.TempDir(), Options{})
	ctx := context.Background()
	for i := range 50 {
		appendAll(t, s, testEvents(i, 1))
		b, err := s.Next(ctx, 10)
		if err != nil {
			t.Fatalf("Next after %d appends: %v", i+1, err)
		}
		wantIDs(t, b.Events, i, 1)
		if err := s.Ack(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSpoolRecoversASegmentLeftAllocatedByACrash(t *testing.T) {
	// A copy of the files of a live spool is what a crash leaves: the active
	// segment still has its space allocated ahead, full of zeros.
	dir := t.TempDir()
	s := openTestSpool(t, dir, Options{})
	appendAll(t, s, testEvents(0, 20))
	crashed := t.TempDir()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, sg := range segs {
		b, err := os.ReadFile(sg.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crashed, filepath.Base(sg.path)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := openTestSpool(t, crashed, Options{})
	wantIDs(t, drain(t, r), 0, 20)
	appendAll(t, r, testEvents(20, 1))
	got := drain(t, r)
	wantIDs(t, got, 0, 21)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed, a segment ends at its last record.
	segs, err = listSegments(crashed)
	if err != nil {
		t.Fatal(err)
	}
	last := segs[len(segs)-1]
	if err := last.scan(false); err != nil {
		t.Fatalf("closed segment does not end at its last record: %v", err)
	}
	if last.count != 21 {
		t.Fatalf("closed segment holds %d records, want 21", last.count)
	}
}

func TestSpoolRecordPayloadIsCanonical(t *testing.T) {
	e := testEvent(9)
	e.Detail = "<tag> & more"
	rec, err := encodeRecord(&e)
	if err != nil {
		t.Fatal(err)
	}
	want, err := audit.Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec[recordHeader:], want) {
		t.Fatalf("record payload differs from canonical:\n%s\n%s", rec[recordHeader:], want)
	}
}
