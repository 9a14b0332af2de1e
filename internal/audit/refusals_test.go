package audit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// refusalSink records what a Refusals writes, and fails on demand.
type refusalSink struct {
	mu     sync.Mutex
	events []Event
	fail   error
	// wrote, if set, receives a value after each write.
	wrote chan struct{}
}

func (s *refusalSink) record(_ context.Context, e *Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if err := e.Validate(); err != nil {
		return err
	}
	s.events = append(s.events, *e)
	if s.wrote != nil {
		s.wrote <- struct{}{}
	}
	return nil
}

func (s *refusalSink) written() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// manualClock is a clock tests move by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testCoordinator is the recorder of the refusals in these tests.
const testCoordinator = "spiffe://mesh.test/admin/coordinator"

func refusal(addr string, why reason.Code) *Event {
	return &Event{Kind: KindConnection, SrcAddr: addr, Dst: testCoordinator, Decision: Deny, Reason: why,
		Outcome: "refused", Detail: "detail of " + addr}
}

func TestRefusalsWriteTheFirstAtOnceAndAggregateTheRest(t *testing.T) {
	clk := &manualClock{t: testBase}
	sink := &refusalSink{}
	r := NewRefusals(RefusalOptions{Record: sink.record, Now: clk.Now, Window: time.Minute})
	ctx := context.Background()
	var ids []string
	var second time.Time
	for i := range 100 {
		// Another port on every connection: still one source.
		e := refusal(fmt.Sprintf("192.0.2.7:%d", 40000+i), "tls_version")
		e.Detail = fmt.Sprintf("attempt %d", i)
		if i == 1 {
			second = clk.Now()
		}
		id, err := r.Refuse(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if i == 0 && len(sink.written()) != 1 {
			t.Fatalf("the first refusal was not written at once")
		}
		clk.Advance(300 * time.Millisecond)
	}
	last := clk.Now().Add(-300 * time.Millisecond)
	if n := len(sink.written()); n != 1 {
		t.Fatalf("%d events written during the window, want 1", n)
	}
	clk.t = testBase.Add(time.Minute - time.Nanosecond)
	r.Tick(ctx)
	if n := len(sink.written()); n != 1 {
		t.Fatalf("%d events written before the window ended, want 1", n)
	}
	clk.Advance(time.Nanosecond)
	r.Tick(ctx)
	got := sink.written()
	if len(got) != 2 {
		t.Fatalf("%d events after the window, want 2", len(got))
	}
	first, agg := got[0], got[1]
	if first.ID != ids[0] || first.Count != 0 || first.Detail != "attempt 0" {
		t.Fatalf("first event %+v", first)
	}
	if agg.Count != 99 || !agg.First.Equal(second) || !agg.Time.Equal(last) || agg.Detail != "attempt 1" ||
		agg.SrcAddr != "192.0.2.7:40001" || agg.Reason != "tls_version" || agg.Dst != testCoordinator {
		t.Fatalf("aggregate %+v", agg)
	}
	for i, id := range ids[1:] {
		if id != agg.ID {
			t.Fatalf("attempt %d was told %s, not the aggregate %s", i+1, id, agg.ID)
		}
	}
	// A new window writes its first refusal at once again.
	if _, err := r.Refuse(ctx, refusal("192.0.2.7:1", "tls_version")); err != nil || len(sink.written()) != 3 {
		t.Fatalf("new window: %v, %d events", err, len(sink.written()))
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRefusalsAccountForEveryAttemptExactly floods many sources and reasons
// with a table that overflows, at random times, and checks the books: every
// id a caller was told is written once, each event accounts for exactly
// the attempts told its id, and the counts sum to the attempts.
func TestRefusalsAccountForEveryAttemptExactly(t *testing.T) {
	clk := &manualClock{t: testBase}
	sink := &refusalSink{}
	const maxKeys = 8
	r := NewRefusals(RefusalOptions{Record: sink.record, Now: clk.Now, Window: 10 * time.Second, MaxKeys: maxKeys})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	told := map[string]int64{}
	const attempts = 20_000
	for i := range attempts {
		e := refusal(fmt.Sprintf("198.51.100.%d:%d", rng.IntN(200), rng.IntN(65536)), []reason.Code{"tls_version", "unknown_ca", "no_certificate"}[rng.IntN(3)])
		if rng.IntN(4) == 0 {
			e.Src, e.SrcAddr = fmt.Sprintf("spiffe://mesh.test/agent/a%d", rng.IntN(30)), "127.0.0.1:1"
		}
		if i%1000 == 999 {
			sink.mu.Lock()
			sink.fail = errors.New("disk full") // some writes fail for a while
			sink.mu.Unlock()
		}
		if i%1000 == 20 {
			sink.mu.Lock()
			sink.fail = nil
			sink.mu.Unlock()
		}
		id, _ := r.Refuse(ctx, e)
		told[id]++
		clk.Advance(time.Duration(rng.IntN(5)) * time.Millisecond)
		if rng.IntN(100) == 0 {
			r.Tick(ctx)
		}
		r.mu.Lock()
		if r.fine > maxKeys || r.coarse > maxKeys || len(r.open) > 2*maxKeys+1 {
			t.Fatalf("open keys %d (fine %d, coarse %d) beyond the bound", len(r.open), r.fine, r.coarse)
		}
		r.mu.Unlock()
	}
	sink.mu.Lock()
	sink.fail = nil
	sink.mu.Unlock()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var sum int64
	seen := map[string]bool{}
	for _, e := range sink.written() {
		if seen[e.ID] {
			t.Fatalf("event %s written twice", e.ID)
		}
		seen[e.ID] = true
		if told[e.ID] != e.Attempts() {
			t.Fatalf("event %s accounts for %d attempts, %d were told its id", e.ID, e.Attempts(), told[e.ID])
		}
		sum += e.Attempts()
	}
	if sum != attempts {
		t.Fatalf("events account for %d attempts, want %d", sum, attempts)
	}
	for id := range told {
		if !seen[id] {
			t.Fatalf("id %s was told but never written", id)
		}
	}
	if n := len(sink.written()); n > attempts/10 {
		t.Fatalf("%d events for %d attempts: not aggregated", n, attempts)
	}
}

func TestRefusalsGoCoarseBeyondMaxKeys(t *testing.T) {
	clk := &manualClock{t: testBase}
	sink := &refusalSink{}
	r := NewRefusals(RefusalOptions{Record: sink.record, Now: clk.Now, MaxKeys: 2})
	ctx := context.Background()
	for i := range 10 {
		for range 3 {
			r.Refuse(ctx, refusal(fmt.Sprintf("203.0.113.%d:5", i), "unknown_ca"))
		}
	}
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var coarse []Event
	var sum int64
	for _, e := range sink.written() {
		sum += e.Attempts()
		if e.Count > 0 && e.SrcAddr == "" {
			coarse = append(coarse, e)
		}
	}
	if sum != 30 {
		t.Fatalf("attempts accounted %d, want 30", sum)
	}
	if len(coarse) != 1 || coarse[0].Src != "" || !strings.Contains(coarse[0].Detail, "203.0.113.2:5") || coarse[0].Reason != "unknown_ca" {
		t.Fatalf("coarse aggregates %+v", coarse)
	}
}

func TestRefusalsKeepAnAggregateWhoseWriteFailed(t *testing.T) {
	clk := &manualClock{t: testBase}
	sink := &refusalSink{}
	r := NewRefusals(RefusalOptions{Record: sink.record, Now: clk.Now})
	ctx := context.Background()
	r.Refuse(ctx, refusal("192.0.2.1:1", "no_certificate"))
	id, _ := r.Refuse(ctx, refusal("192.0.2.1:2", "no_certificate"))
	sink.fail = errors.New("database is locked")
	clk.Advance(time.Hour)
	if err := r.Tick(ctx); err == nil {
		t.Fatal("Tick hid a failed write")
	}
	sink.fail = nil
	if err := r.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	got := sink.written()
	if len(got) != 2 || got[1].ID != id || got[1].Count != 1 {
		t.Fatalf("events %+v, want the aggregate %s written on the retry", got, id)
	}
	// A first refusal that cannot be written is counted in its window.
	sink.fail = errors.New("database is locked")
	id2, err := r.Refuse(ctx, refusal("192.0.2.9:1", "no_certificate"))
	if err == nil {
		t.Fatal("Refuse hid a failed write")
	}
	sink.fail = nil
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got = sink.written()
	if len(got) != 3 || got[2].ID != id2 || got[2].Count != 1 {
		t.Fatalf("events %+v, want the unwritten attempt in aggregate %s", got, id2)
	}
}

func TestRefusalsRunWritesWindowsAsTheyEndAndEverythingWhenStopped(t *testing.T) {
	clk := &manualClock{t: testBase}
	sink := &refusalSink{wrote: make(chan struct{}, 16)}
	fire := make(chan time.Time)
	asked := make(chan time.Duration, 16)
	r := NewRefusals(RefusalOptions{Record: sink.record, Now: clk.Now, After: func(d time.Duration) <-chan time.Time {
		asked <- d
		return fire
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	r.Refuse(ctx, refusal("192.0.2.1:1", "unknown_ca"))
	r.Refuse(ctx, refusal("192.0.2.1:2", "unknown_ca"))
	if d := <-asked; d != DefaultRefusalWindow {
		t.Fatalf("Run waits %v for the window, want %v", d, DefaultRefusalWindow)
	}
	<-sink.wrote // the first refusal, at once
	clk.Advance(DefaultRefusalWindow)
	fire <- clk.Now()
	<-sink.wrote // the aggregate, when the window ended
	if got := sink.written(); len(got) != 2 || got[1].Count != 1 {
		t.Fatalf("after the window: %+v", got)
	}
	// A window open when Run stops is written, not lost.
	r.Refuse(ctx, refusal("192.0.2.5:1", "unknown_ca"))
	r.Refuse(ctx, refusal("192.0.2.5:2", "unknown_ca"))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-sink.wrote
	<-sink.wrote
	if got := sink.written(); len(got) != 4 || got[3].Count != 1 {
		t.Fatalf("after stopping: %+v", got)
	}
	// Later refusals are written one by one.
	r.Refuse(context.Background(), refusal("192.0.2.5:3", "unknown_ca"))
	if got := sink.written(); len(got) != 5 {
		t.Fatalf("after close: %d events, want 5", len(got))
	}
}
