// Package backoff is the one retry delay of agentmesh: exponential, capped,
// with equal jitter, waited on an injected clock.
//
// Every loop that retries something that failed (shipping audit batches,
// watching the netmap, registering a gateway's address, renewing a
// certificate, reopening a stream) keeps a [Backoff], asks it for the next
// wait after each failure, and resets it after a success:
//
//	b := backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Clock: clock}
//	for {
//		err := try(ctx)
//		if err == nil {
//			b.Reset()
//			continue
//		}
//		if b.Wait(ctx) != nil {
//			return ctx.Err()
//		}
//	}
//
// The delay doubles from Min up to Max; each wait is drawn between half
// and all of it ("equal jitter"), so that the gateways and agents of a mesh
// that lost their coordinator together do not all come back in the same
// instant, and no wait is ever shorter than half the current delay. Tests
// inject Rand and Clock and never sleep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults for the zero Backoff.
const (
	DefaultMin = 100 * time.Millisecond
	DefaultMax = 30 * time.Second
)

// Clock is what a Backoff waits on. pki.Clock, and its fake pkitest.Clock,
// satisfy it.
type Clock interface {
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// AfterFunc adapts a function such as time.After to a Clock.
type AfterFunc func(d time.Duration) <-chan time.Time

// After calls f.
func (f AfterFunc) After(d time.Duration) <-chan time.Time { return f(d) }

// Backoff is the delay state of one retry loop. Set the fields, then call
// Next or Wait after each failure and Reset after each success. It is not
// safe for concurrent use: it belongs to the loop.
type Backoff struct {
	// Min is the delay after the first failure; zero means DefaultMin.
	Min time.Duration
	// Max caps the delay; below Min means max(DefaultMax, Min).
	Max time.Duration
	// Rand returns a number in [0, 1) that places each wait between half
	// and all of the delay; nil means math/rand/v2.
	Rand func() float64
	// Clock is what Wait waits on; nil means the wall clock.
	Clock Clock

	delay    time.Duration // the delay of the next failure; 0: Min
	failures int
}

// Next records one more failure and returns how long to wait before the
// next attempt.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.bounds()
	if b.delay == 0 {
		b.delay = lo
	}
	d := b.delay
	b.delay = min(d*2, hi)
	b.failures++
	u := rand.Float64
	if b.Rand != nil {
		u = b.Rand
	}
	return d/2 + time.Duration(u()*float64(d-d/2))
}

// Wait waits Next() on the clock. It returns ctx's error if ctx ends
// first, else nil.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Clock, b.Next())
}

// Reset forgets the failures: the next one waits about Min again.
func (b *Backoff) Reset() {
	b.delay, b.failures = 0, 0
}

// Failures is the number of failures since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi < lo {
		hi = max(DefaultMax, lo)
	}
	return lo, hi
}

// Sleep waits for d on clock (nil: the wall clock), returning ctx's error
// if ctx ends first. A d <= 0 only checks ctx.
func Sleep(ctx context.Context, clock Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	var fired <-chan time.Time
	if clock == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		fired = t.C
	} else {
		fired = clock.After(d)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-fired:
		return nil
	}
}
