package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
	"unicode/utf8"
)

// Refusals aggregates refused attempts (refused handshakes, requests
// refused at admission, bad joins) so that a client hammering a node cannot
// write one stored event per attempt, while every attempt stays accounted
// for.
//
// Attempts are keyed by (recorder, source, reason, kind): the recorder is
// the event's Dst, the source its Src identity when known and otherwise the
// host of SrcAddr (not the port, which changes with every connection). The
// first refusal of a key is recorded at once, as an ordinary event, so an
// operator sees it immediately. Later ones within the key's window (Window
// from that first one) are counted into one aggregate event, written when
// the window ends: Count attempts from First to Time, with the first of
// them as the sample (its fields and Detail). So a key writes at most two
// events per window however often it is refused, and the counts add up to
// the attempts exactly: the sum of Event.Attempts over the events written
// is the number of Refuse calls.
//
// The table of open keys is bounded: beyond MaxKeys sources, refusals are
// aggregated per (recorder, reason, kind) without the source (a coarse key:
// Src and SrcAddr empty, the first source named in Detail), and beyond
// MaxKeys coarse keys per recorder alone. Nothing is dropped and memory
// stays bounded; only the detail of who was refused gets coarser.
//
// Refuse returns the id of the event that accounts for the attempt: the
// immediate event's, or the aggregate's, which is chosen when the window's
// first counted attempt arrives. A client told that id (a gateway's refusal
// body carries it) finds its attempt in the trail once the window ends.
//
// An aggregate that cannot be written is kept and written again later, never
// dropped. Close (or the end of Run) writes every open window; after it,
// Refuse records each attempt as its own event.
type Refusals struct {
	opts RefusalOptions
	log  *slog.Logger

	mu     sync.Mutex
	open   map[refusalKey]*refusalWindow
	fine   int     // open keys with a source
	coarse int     // open keys without one
	retry  []Event // aggregates whose write failed
	closed bool
	wake   chan struct{} // signalled when a window opens, so Run looks again
}

// RefusalOptions configure Refusals. Record is required; the rest may be
// zero.
type RefusalOptions struct {
	// Record writes one event: a spool's Append at a gateway, the store's
	// Append at the coordinator.
	Record func(ctx context.Context, e *Event) error
	// Window is how long a key aggregates after its first refusal. Zero
	// means DefaultRefusalWindow.
	Window time.Duration
	// MaxKeys bounds the open keys with a source, and separately those
	// without. Zero means DefaultRefusalKeys.
	MaxKeys int
	// Now is the clock of windows and event times; nil is time.Now.
	Now func() time.Time
	// After returns a channel that fires after d, as time.After does (nil
	// means time.After); Run waits on it for the next window to end.
	After func(d time.Duration) <-chan time.Time
	// Logger receives failed writes; nil discards.
	Logger *slog.Logger
	// Observe, when set, sees every refused attempt as Refuse is called
	// (the metrics' count), before any aggregation.
	Observe func(e *Event)
}

// Defaults of RefusalOptions. With them one source that is refused without
// pause writes at most 2 events a minute (2,880 a day), and refusals from
// any number of sources at most 2 × (64 + coarse keys) events a minute.
const (
	DefaultRefusalWindow = time.Minute
	DefaultRefusalKeys   = 64
)

// maxSampleDetail bounds the Detail an aggregate keeps of its sample.
const maxSampleDetail = 1024

type refusalKey struct {
	recorder, source, reason string
	kind                     Kind
}

// refusalWindow is one open key.
type refusalWindow struct {
	end time.Time
	// level: 0 a source, 1 no source, 2 the recorder alone.
	level int
	// agg is the aggregate of the counted attempts; agg.Count == 0 while
	// there are none.
	agg Event
}

// NewRefusals returns an aggregator writing through opts.Record. Call Run
// to have windows written as they end, and Close when done.
func NewRefusals(opts RefusalOptions) *Refusals {
	if opts.Window <= 0 {
		opts.Window = DefaultRefusalWindow
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = DefaultRefusalKeys
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	r := &Refusals{opts: opts, log: opts.Logger, open: map[refusalKey]*refusalWindow{}, wake: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

// Refuse accounts for one refused attempt described by e (Kind, Dst, Src or
// SrcAddr, Reason, and whatever else applies; V, ID and Time are filled in
// when empty) and returns the id of the event that accounts for it. An
// error means the attempt's event could not be written now; the attempt is
// still accounted for, in the aggregate whose id is returned.
func (r *Refusals) Refuse(ctx context.Context, e *Event) (string, error) {
	if r.opts.Observe != nil {
		r.opts.Observe(e)
	}
	now := r.opts.Now().UTC()
	e.Stamp(now)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		err := r.opts.Record(ctx, e)
		if err != nil {
			r.mu.Lock()
			r.retry = append(r.retry, *e)
			r.mu.Unlock()
			return e.ID, fmt.Errorf("audit: refusal (kept to be written again): %w", err)
		}
		return e.ID, nil
	}
	key, level := r.keyFor(e)
	if w := r.open[key]; w != nil {
		id := w.add(e, level)
		r.mu.Unlock()
		return id, nil
	}
	w := r.openWindow(key, level, now)
	r.mu.Unlock()
	err := r.opts.Record(ctx, e)
	if err == nil {
		return e.ID, nil
	}
	// Not written: the aggregate accounts for it instead.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		// Close has already run: keep the event for the next Close.
		r.retry = append(r.retry, *e)
		return e.ID, fmt.Errorf("audit: refusal (kept to be written again): %w", err)
	}
	if r.open[key] != w {
		w = r.openWindow(key, level, now)
	}
	return w.add(e, level), fmt.Errorf("audit: refusal (counted in aggregate): %w", err)
}

// keyFor picks the key e is counted under, coarser when the table is
// full. r.mu must be held.
func (r *Refusals) keyFor(e *Event) (refusalKey, int) {
	k := refusalKey{recorder: e.Dst, source: sourceOf(e), reason: string(e.Reason), kind: e.Kind}
	if _, ok := r.open[k]; ok || r.fine < r.opts.MaxKeys {
		return k, 0
	}
	k.source = ""
	if _, ok := r.open[k]; ok || r.coarse < r.opts.MaxKeys {
		return k, 1
	}
	return refusalKey{recorder: e.Dst}, 2
}

// openWindow opens key's window from now. r.mu must be held.
func (r *Refusals) openWindow(key refusalKey, level int, now time.Time) *refusalWindow {
	w := &refusalWindow{end: now.Add(r.opts.Window), level: level}
	r.open[key] = w
	if level == 0 {
		r.fine++
	} else if level == 1 {
		r.coarse++
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return w
}

// sourceOf is who was refused: the identity, or the client's host.
func sourceOf(e *Event) string {
	if e.Src != "" {
		return e.Src
	}
	if host, _, err := net.SplitHostPort(e.SrcAddr); err == nil {
		return host
	}
	return e.SrcAddr
}

// add counts e into the window's aggregate and returns the aggregate's id.
func (w *refusalWindow) add(e *Event, level int) string {
	if w.agg.Count == 0 {
		w.agg = *e
		w.agg.ID, w.agg.First = NewID(), e.Time
		w.agg.Detail = truncateUTF8(e.Detail, maxSampleDetail)
		if level > 0 {
			// Many sources share this aggregate: name none of them as
			// its source, only the first as its sample.
			what := "many sources"
			if level == 2 {
				what = "many sources and reasons"
			}
			w.agg.Src, w.agg.SrcAddr = "", ""
			w.agg.Detail = fmt.Sprintf("aggregated over %s (refusal table full); first: %s %s: %s",
				what, e.Src, e.SrcAddr, w.agg.Detail)
		}
	}
	w.agg.Count++
	if e.Time.After(w.agg.Time) {
		w.agg.Time = e.Time
	}
	if e.Time.Before(w.agg.First) {
		w.agg.First = e.Time
	}
	return w.agg.ID
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Tick writes the aggregates of every window that has ended by now, and
// any whose earlier write failed. Run calls it; tests may call it directly.
func (r *Refusals) Tick(ctx context.Context) error {
	return r.flush(ctx, false)
}

// flush writes ended windows (all when everything is set). A failed
// aggregate is kept for the next flush.
func (r *Refusals) flush(ctx context.Context, everything bool) error {
	now := r.opts.Now()
	r.mu.Lock()
	due := r.retry
	r.retry = nil
	for k, w := range r.open {
		if !everything && w.end.After(now) {
			continue
		}
		delete(r.open, k)
		if w.level == 0 {
			r.fine--
		} else if w.level == 1 {
			r.coarse--
		}
		if w.agg.Count > 0 {
			due = append(due, w.agg)
		}
	}
	r.mu.Unlock()
	var errs []error
	var failed []Event
	for i := range due {
		if err := r.opts.Record(ctx, &due[i]); err != nil {
			r.log.Error("audit: writing aggregated refusals failed; keeping them", "err", err,
				"event_id", due[i].ID, "count", due[i].Count, "reason", due[i].Reason)
			errs = append(errs, err)
			failed = append(failed, due[i])
		}
	}
	if len(failed) > 0 {
		r.mu.Lock()
		r.retry = append(r.retry, failed...)
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}

// next is when Run must look again: the earliest window end, or a retry
// delay. ok is false when nothing is open.
func (r *Refusals) next() (at time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.open {
		if !ok || w.end.Before(at) {
			at, ok = w.end, true
		}
	}
	if len(r.retry) > 0 {
		if t := r.opts.Now().Add(r.opts.Window); !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	return at, ok
}

// Run writes each window's aggregate when it ends, until ctx is done; then
// it closes r, writing every open window, and returns the error of that.
func (r *Refusals) Run(ctx context.Context) error {
	for {
		var fire <-chan time.Time
		if at, ok := r.next(); ok {
			fire = r.opts.After(max(at.Sub(r.opts.Now()), 0))
		}
		select {
		case <-fire:
			r.Tick(ctx)
		case <-r.wake:
		case <-ctx.Done():
			return r.Close(context.WithoutCancel(ctx))
		}
	}
}

// Close writes every open window's aggregate now and makes later refusals
// be recorded one event each. It returns the errors of writes that failed
// (those aggregates are still kept; a later Close tries them again).
func (r *Refusals) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	return r.flush(ctx, true)
}
