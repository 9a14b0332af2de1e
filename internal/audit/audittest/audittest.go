// Package audittest provides test doubles for the audit packages: a Sender
// (spool.Sender) that fails on demand and records what it delivered, and
// an event generator.
package audittest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
)

// ErrUnavailable is what Sender returns for a simulated failure.
var ErrUnavailable = errors.New("audittest: coordinator unavailable")

// Sender is a spool.Sender for tests. It fails the first FailFirst calls
// with ErrUnavailable, then passes each batch to Deliver (if set) and
// records it. The zero value accepts everything. It is safe for concurrent
// use.
type Sender struct {
	// FailFirst is how many calls fail before the first success.
	FailFirst int
	// Deliver, if set, receives each batch that is not failed; its error
	// is returned to the shipper (and the batch is not recorded).
	Deliver func(ctx context.Context, events []audit.Event) error
	// Delivered, if set, is signalled (without blocking) after each
	// successful delivery, so tests can wait without sleeping.
	Delivered chan struct{}

	mu      sync.Mutex
	calls   int
	batches [][]audit.Event
}

// Send implements spool.Sender.
func (s *Sender) Send(ctx context.Context, events []audit.Event) error {
	s.mu.Lock()
	s.calls++
	fail := s.calls <= s.FailFirst
	s.mu.Unlock()
	if fail {
		return ErrUnavailable
	}
	if s.Deliver != nil {
		if err := s.Deliver(ctx, events); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.batches = append(s.batches, append([]audit.Event(nil), events...))
	s.mu.Unlock()
	if s.Delivered != nil {
		select {
		case s.Delivered <- struct{}{}:
		default:
		}
	}
	return nil
}

// Calls reports how many times Send was called.
func (s *Sender) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Events returns every delivered event, in delivery order.
func (s *Sender) Events() []audit.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []audit.Event
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

// Event returns a valid request event numbered i, with a deterministic id
// and a time i milliseconds after base, so tests can predict it.
func Event(i int, base time.Time) audit.Event {
	return audit.Event{
		V:             audit.SchemaVersion,
		ID:            fmt.Sprintf("%032x", i+1),
		Time:          base.Add(time.Duration(i) * time.Millisecond).UTC(),
		Kind:          audit.KindRequest,
		Src:           fmt.Sprintf("spiffe://mesh.test/agent/agent-%d", i%7),
		SrcAddr:       "127.0.0.1:50000",
		Dst:           fmt.Sprintf("spiffe://mesh.test/tool/tool-%d", i%3),
		Method:        "tools/call",
		Tool:          fmt.Sprintf("tool_%d", i%5),
		Decision:      []audit.Decision{audit.Allow, audit.Deny}[i%2],
		Reason:        "granted",
		Rule:          "grants[0]",
		PolicyVersion: "v1",
		Session:       "sess-1",
		LatencyUS:     int64(100 + i%50),
		Outcome:       "ok",
	}
}

// Events returns n events numbered from, from..from+n-1, as Event makes
// them.
func Events(from, n int, base time.Time) []audit.Event {
	out := make([]audit.Event, n)
	for i := range out {
		out[i] = Event(from+i, base)
	}
	return out
}
