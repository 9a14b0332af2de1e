package alert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/backoff"
)

// Delivery defaults.
const (
	DefaultQueueSize   = 256
	DefaultMaxAttempts = 6
	DefaultTimeout     = 10 * time.Second
	DefaultMinDelay    = time.Second
	DefaultMaxDelay    = 5 * time.Minute
	// MaxResponseBody is how much of a receiver's answer is read (and
	// thrown away) so that the connection can be reused.
	MaxResponseBody = 64 << 10
)

// Receiver is one webhook.
type Receiver struct {
	// Name identifies it in logs and the audit trail (its URL may hold
	// a token, so it is never shown).
	Name string
	// URL is where alerts are POSTed.
	URL string
	// Secret signs every delivery (Sign).
	Secret []byte
	// Kinds are the kinds it gets; empty means every kind.
	Kinds []Kind
}

// Wants reports whether r gets alerts of kind k (every receiver gets
// Test).
func (r *Receiver) Wants(k Kind) bool {
	return k == Test || len(r.Kinds) == 0 || slices.Contains(r.Kinds, k)
}

// Attempt is the outcome of one delivery attempt, as Options.OnAttempt
// gets it.
type Attempt struct {
	Receiver string
	Alert    Alert
	// N counts the attempts of this delivery from 1; Max is the most
	// there will be.
	N, Max int
	// Status is the receiver's HTTP status, 0 when none came.
	Status int
	// Err says why the attempt failed; nil when it was delivered.
	Err error
	// Final is set on the last attempt of a delivery: delivered, given
	// up after Max, or refused by the receiver in a way a retry would
	// not change (a 4xx other than 429, a redirect).
	Final bool
	// RetryIn is the wait before the next attempt, when not Final.
	RetryIn time.Duration
}

// Delivered reports whether the attempt delivered the alert.
func (a Attempt) Delivered() bool { return a.Err == nil }

// Options configure a Sender; zero fields are defaults.
type Options struct {
	// QueueSize bounds each receiver's queue (DefaultQueueSize).
	QueueSize int
	// MaxAttempts bounds the attempts of one delivery (DefaultMaxAttempts).
	MaxAttempts int
	// Timeout bounds each request, answer included (DefaultTimeout).
	Timeout time.Duration
	// MinDelay and MaxDelay bound the backoff between attempts
	// (DefaultMinDelay, DefaultMaxDelay).
	MinDelay, MaxDelay time.Duration
	// Clock is what the backoff waits on (nil: the wall clock); Rand
	// places each wait within it (backoff.Backoff.Rand).
	Clock backoff.Clock
	Rand  func() float64
	// Now stamps signatures (time.Now).
	Now func() time.Time
	// Transport sends the requests (nil: a clone of
	// http.DefaultTransport, which honours the proxy environment).
	Transport http.RoundTripper
	// OnAttempt, when set, is called after every attempt, from the
	// receiver's delivery goroutine: the coordinator audits each one.
	OnAttempt func(Attempt)
	// Logger receives drops and failures (nil: discard).
	Logger *slog.Logger
}

// Sender delivers alerts to receivers, each from its own bounded queue
// and goroutine, so that a slow receiver delays only its own alerts.
type Sender struct {
	o      Options
	client *http.Client
	log    *slog.Logger
	rs     []*outbox
}

type outbox struct {
	r Receiver
	q *Queue
}

// NewSender returns a Sender to rs; Run delivers.
func NewSender(rs []Receiver, o Options) *Sender {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MinDelay <= 0 {
		o.MinDelay = DefaultMinDelay
	}
	if o.MaxDelay < o.MinDelay {
		o.MaxDelay = max(DefaultMaxDelay, o.MinDelay)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rt := o.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	s := &Sender{o: o, log: log, client: &http.Client{
		Transport: rt,
		Timeout:   o.Timeout,
		// A receiver's redirect could send the coordinator's signed
		// requests anywhere (an internal address): never followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	for _, r := range rs {
		s.rs = append(s.rs, &outbox{r: r, q: NewQueue(o.QueueSize)})
	}
	return s
}

// Send queues a for every receiver that wants its kind, without blocking:
// a full queue drops its oldest alert (logged, and counted in Dropped).
func (s *Sender) Send(a Alert) {
	body, err := a.Marshal()
	if err != nil {
		s.log.Error("alert: encoding", "err", err, "kind", a.Kind)
		return
	}
	for _, ob := range s.rs {
		if !ob.r.Wants(a.Kind) {
			continue
		}
		if ob.q.push(queued{alert: a, body: body}) && LogDrop(ob.q.Dropped()) {
			s.log.Warn("alert: queue full, dropped the oldest alert", "receiver", ob.r.Name, "dropped_total", ob.q.Dropped())
		}
	}
}

// Dropped is how many alerts each receiver's queue dropped, by name.
func (s *Sender) Dropped() map[string]uint64 {
	out := map[string]uint64{}
	for _, ob := range s.rs {
		out[ob.r.Name] = ob.q.Dropped()
	}
	return out
}

// Run delivers until ctx ends, and returns once every delivery goroutine
// has stopped. Alerts still queued then are not delivered.
func (s *Sender) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ob := range s.rs {
		wg.Go(func() { s.drain(ctx, ob) })
	}
	wg.Wait()
	// Kept-alive connections to receivers hold goroutines of their own.
	s.client.CloseIdleConnections()
}

func (s *Sender) drain(ctx context.Context, ob *outbox) {
	for {
		select {
		case <-ctx.Done():
			if n := ob.q.Len(); n > 0 {
				s.log.Warn("alert: stopping with alerts undelivered", "receiver", ob.r.Name, "alerts", n)
			}
			return
		case <-ob.q.Ready():
		}
		for {
			e, ok := ob.q.pop()
			if !ok {
				break
			}
			if s.deliver(ctx, ob.r, e) != nil {
				return // ctx ended
			}
		}
	}
}

// errRetry marks a failure worth retrying.
type errRetry struct {
	err   error
	after time.Duration // the receiver's Retry-After, if it gave one
}

func (e *errRetry) Error() string { return e.err.Error() }
func (e *errRetry) Unwrap() error { return e.err }

// deliver makes the attempts of one delivery; it returns ctx's error if
// ctx ended, nil otherwise (delivered or given up).
func (s *Sender) deliver(ctx context.Context, r Receiver, e queued) error {
	b := backoff.Backoff{Min: s.o.MinDelay, Max: s.o.MaxDelay, Clock: s.o.Clock, Rand: s.o.Rand}
	for n := 1; ; n++ {
		status, err := s.post(ctx, r, e.body)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		at := Attempt{Receiver: r.Name, Alert: e.alert, N: n, Max: s.o.MaxAttempts, Status: status, Err: err}
		var re *errRetry
		retry := errors.As(err, &re) && n < s.o.MaxAttempts
		if retry {
			at.RetryIn = min(max(b.Next(), re.after), s.o.MaxDelay)
		} else {
			at.Final = true
		}
		if err != nil {
			s.log.Warn("alert: delivery attempt failed", "receiver", r.Name, "alert", e.alert.ID, "kind", e.alert.Kind,
				"attempt", n, "status", status, "err", err, "final", at.Final)
		}
		if s.o.OnAttempt != nil {
			s.o.OnAttempt(at)
		}
		if at.Final {
			return nil
		}
		if err := backoff.Sleep(ctx, s.o.Clock, at.RetryIn); err != nil {
			return err
		}
	}
}

// post makes one attempt. Network errors, 5xx and 429 are errRetry.
func (s *Sender) post(ctx context.Context, r Receiver, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "agentmesh-alert/1")
	req.Header.Set(SignatureHeader, Sign(r.Secret, body, s.o.Now()))
	resp, err := s.client.Do(req)
	if err != nil {
		// The error may quote the URL, which may hold a token: keep
		// only what kind of failure it was.
		return 0, &errRetry{err: errors.New("no answer: " + netReason(err))}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBody))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return resp.StatusCode, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return resp.StatusCode, &errRetry{err: fmt.Errorf("HTTP %d", resp.StatusCode), after: retryAfter(resp.Header.Get("Retry-After"))}
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return resp.StatusCode, fmt.Errorf("HTTP %d: redirects are not followed; configure the final URL", resp.StatusCode)
	default:
		return resp.StatusCode, fmt.Errorf("HTTP %d: refused by the receiver, not retried", resp.StatusCode)
	}
}

// netReason names a transport failure without the URL.
func netReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	default:
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			return ue.Unwrap().Error()
		}
		return "transport error"
	}
}

// retryAfter reads a Retry-After header given in seconds (0 otherwise).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 3600)) * time.Second
}
