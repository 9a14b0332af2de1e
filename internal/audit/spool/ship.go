package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/metrics"
)

// Sender delivers a batch of events to the coordinator. A nil error means
// the coordinator stored all of them (durably) and proved it (a receipt
// that binds the batch, audit.Receipt.CheckBatch); anything else means the batch
// will be sent again, so the receiver must be idempotent by (dst, event
// id). An error wrapping audit.ErrNotKept says the coordinator answered but did
// not show that it kept what was sent. controlclient.Client implements it.
type Sender interface {
	Send(ctx context.Context, events []audit.Event) error
}

// ShipOptions configures Ship. The zero value is usable.
type ShipOptions struct {
	// MaxBatch is the most events sent in one call. Zero means 1000.
	MaxBatch int
	// MinBackoff is the wait after the first failed send; it doubles on
	// each further failure up to MaxBackoff. Zero means 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// After returns a channel that fires after d, as time.After does (nil
	// means time.After). Tests inject it so they never sleep.
	After func(d time.Duration) <-chan time.Time
	// Jitter returns a number in [0, 1) that spreads retries of many
	// gateways apart; nil means math/rand/v2.
	Jitter func() float64
	// Logger receives failed sends; nil discards.
	Logger *slog.Logger
	// Linger is how long Ship waits for a batch that is not full to fill
	// up before sending it, so that a busy gateway sends a few large
	// batches (one coordinator transaction each) rather than one per
	// fsync. Events are durable in the spool meanwhile; only their arrival
	// at the coordinator waits. Zero means 100 ms; negative sends at once.
	Linger time.Duration
	// Metrics records the oldest event waiting, what was shipped and
	// failed sends; nil records nothing.
	Metrics *metrics.Set
}

// Ship sends the spool's events to sender until ctx is done or the spool is
// closed: it reads a batch, sends it, and acknowledges it only after the
// send succeeded. A failed send is retried, with exponential backoff and
// jitter, for as long as it takes; events are never skipped. It returns nil
// when the spool was closed and ctx's error when ctx ended.
func Ship(ctx context.Context, spool *Spool, sender Sender, opts ShipOptions) error {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Linger == 0 {
		opts.Linger = 100 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	retry := backoff.Backoff{Min: opts.MinBackoff, Max: opts.MaxBackoff, Rand: opts.Jitter}
	for {
		n, err := spool.waitDurable(ctx)
		if err == nil && n < uint64(opts.MaxBatch) && opts.Linger > 0 && retry.Failures() == 0 {
			// Let the batch fill up; a retry after a failure does not wait.
			select {
			case <-opts.After(opts.Linger):
			case <-spool.closing:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var b Batch
		if err == nil {
			b, err = spool.Next(ctx, opts.MaxBatch)
		}
		switch {
		case errors.Is(err, ErrClosed):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			// A damaged spool or a failed writer: nothing more will
			// come, and retrying would spin.
			return fmt.Errorf("audit: ship: %w", err)
		}
		if len(b.Events) > 0 {
			opts.Metrics.Shipping(b.Events[0].Time)
		}
		err = sender.Send(ctx, b.Events)
		if err == nil {
			if err := spool.Ack(b); err != nil {
				if errors.Is(err, ErrClosed) {
					return nil
				}
				return fmt.Errorf("audit: ship: %w", err)
			}
			opts.Metrics.Shipped(len(b.Events))
			opts.Metrics.Shipping(time.Time{}) // the next batch, if any, sets it again
			if retry.Failures() > 0 {
				log.Info("audit: shipping resumed", "failures", retry.Failures())
			}
			retry.Reset()
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		opts.Metrics.ShipFailed()
		wait := retry.Next()
		failures := retry.Failures()
		if errors.Is(err, audit.ErrNotKept) {
			// Not an outage: the coordinator answered without proving it
			// stored what was sent. The events stay in the spool.
			log.Error("audit: THE COORDINATOR DID NOT KEEP THE EVENTS SENT; keeping them and retrying",
				"err", err, "events", len(b.Events), "failures", failures, "retry_in", wait)
		} else {
			log.Warn("audit: ship failed; will retry", "err", err, "events", len(b.Events), "failures", failures, "retry_in", wait)
		}
		select {
		case <-opts.After(wait):
		case <-spool.closing:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
