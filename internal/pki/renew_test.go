package pki_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// renewHarness runs a Renewer on a fake clock; the test answers each
// renewal call through calls.
type renewHarness struct {
	t       *testing.T
	clock   *pkitest.Clock
	ca      *pki.CA
	r       *pki.Renewer
	calls   chan chan renewAnswer // one per Renew call; the test answers on it
	renewed chan *tls.Certificate
	done    chan error
	cancel  context.CancelFunc
}

type renewAnswer struct {
	cert *tls.Certificate
	err  error
}

func startRenewer(t *testing.T, initial *tls.Certificate, clock *pkitest.Clock, ca *pki.CA, u float64) *renewHarness {
	t.Helper()
	h := &renewHarness{
		t: t, clock: clock, ca: ca,
		calls:   make(chan chan renewAnswer),
		renewed: make(chan *tls.Certificate, 10),
		done:    make(chan error, 1),
	}
	h.r = &pki.Renewer{
		Clock: clock,
		Rand:  func() float64 { return u },
		Renew: func(ctx context.Context) (*tls.Certificate, error) {
			answer := make(chan renewAnswer)
			select {
			case h.calls <- answer:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			a := <-answer
			return a.cert, a.err
		},
		OnRenew: func(c *tls.Certificate) { h.renewed <- c },
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.r.Run(ctx, initial) }()
	t.Cleanup(h.stop)
	return h
}

func (h *renewHarness) stop() {
	h.cancel()
	// Run returns nil when cancelled (or its own error, already checked).
	<-h.done
	h.done <- nil
}

// ctx bounds how long the test waits for the renewer; a safety net only.
func (h *renewHarness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// nextWake waits until the renewer is waiting on the clock and returns when
// it wants to wake.
func (h *renewHarness) nextWake() time.Time {
	h.t.Helper()
	w, err := h.clock.WaitForWaiters(h.ctx(), 1)
	if err != nil {
		h.t.Fatalf("renewer never waited: %v", err)
	}
	return w[0]
}

// advanceToCall moves the clock to at and waits for the Renew call.
func (h *renewHarness) advanceToCall(at time.Time) chan renewAnswer {
	h.t.Helper()
	h.clock.Set(at)
	select {
	case a := <-h.calls:
		return a
	case <-h.ctx().Done():
		h.t.Fatal("Renew was not called")
		return nil
	}
}

func TestRenewerRenewsAtTwoThirdsOfLifetime(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	clock := pkitest.NewClock(t0)
	first := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	h := startRenewer(t, first, clock, ca, 0.5) // 0.5: no jitter

	life := first.Leaf.NotAfter.Sub(first.Leaf.NotBefore)
	want := first.Leaf.NotBefore.Add(life * 2 / 3)
	if got := h.nextWake(); !got.Equal(want) {
		t.Fatalf("renewal scheduled at %v, want %v (2/3 of the lifetime)", got, want)
	}
	if h.r.Current() != first {
		t.Fatal("Current is not the initial certificate while waiting")
	}
	// A second early, the renewer is still waiting for the same time.
	clock.Set(want.Add(-time.Second))
	if w := clock.Waiters(); len(w) != 1 || !w[0].Equal(want) {
		t.Fatalf("a second early, waiters = %v, want [%v]", w, want)
	}

	second := pkitest.Issue(t, ca, agentID(t, "a"), want, time.Hour)
	h.advanceToCall(want) <- renewAnswer{cert: second}
	if got := <-h.renewed; got != second {
		t.Fatal("OnRenew got another certificate")
	}
	if h.r.Current() != second {
		t.Fatal("Current was not swapped to the renewed certificate")
	}
	// The next renewal follows the new certificate's lifetime.
	want2 := second.Leaf.NotBefore.Add(second.Leaf.NotAfter.Sub(second.Leaf.NotBefore) * 2 / 3)
	if got := h.nextWake(); !got.Equal(want2) {
		t.Fatalf("second renewal scheduled at %v, want %v", got, want2)
	}
}

func TestRenewerJitterStaysWithinTenPercent(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	cert := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)
	tests := []struct {
		u      float64
		factor float64
	}{
		{0, 0.9},
		{0.5, 1.0},
		{0.999999, 1.1},
	}
	for _, tt := range tests {
		h := startRenewer(t, cert, pkitest.NewClock(t0), ca, tt.u)
		got := h.nextWake().Sub(cert.Leaf.NotBefore)
		want := time.Duration(float64(life) * 2 / 3 * tt.factor)
		if d := got - want; d < -time.Second || d > time.Second {
			t.Errorf("u=%v: renews %v after NotBefore, want about %v", tt.u, got, want)
		}
		h.stop()
	}
}

func TestRenewerRetriesWithBackoffAfterFailure(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	clock := pkitest.NewClock(t0)
	first := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	h := startRenewer(t, first, clock, ca, 0.5)

	at := h.nextWake()
	h.advanceToCall(at) <- renewAnswer{err: errors.New("coordinator unreachable")}
	// Retries come after 1s, 2s, 4s of exponential backoff, each wait
	// between half and all of it (0.5: three quarters).
	for i, backoff := range []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second} {
		next := h.nextWake()
		if got := next.Sub(clock.Now()); got != backoff {
			t.Fatalf("retry %d after %v, want %v", i+1, got, backoff)
		}
		answer := h.advanceToCall(next)
		if i < 2 {
			answer <- renewAnswer{err: errors.New("still unreachable")}
			continue
		}
		second := pkitest.Issue(t, ca, agentID(t, "a"), next, time.Hour)
		answer <- renewAnswer{cert: second}
		if got := <-h.renewed; got != second || h.r.Current() != second {
			t.Fatal("the successful retry did not swap the certificate")
		}
	}
	if h.r.Current() == first {
		t.Fatal("still on the first certificate")
	}
}

func TestRenewerGivesUpAtExpiry(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	clock := pkitest.NewClock(t0)
	cert := pkitest.Issue(t, ca, agentID(t, "a"), t0, pki.MinTTL)
	h := startRenewer(t, cert, clock, ca, 0.5)

	attempts := 0
	for {
		wake := h.nextWake()
		if wake.After(cert.Leaf.NotAfter) {
			t.Fatalf("renewer waits until %v, past expiry %v", wake, cert.Leaf.NotAfter)
		}
		h.advanceToCall(wake) <- renewAnswer{err: errors.New("down")}
		attempts++
		if clock.Now().Before(cert.Leaf.NotAfter) {
			continue
		}
		// The last attempt was at expiry: Run gives up.
		err := <-h.done
		h.done <- nil // for stop
		if !errors.Is(err, pki.ErrExpiredBeforeRenewal) {
			t.Fatalf("Run = %v, want ErrExpiredBeforeRenewal", err)
		}
		if attempts < 5 {
			t.Errorf("only %d attempts before expiry", attempts)
		}
		return
	}
}

func TestRenewerRenewsOverdueCertificateAtOnce(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	clock := pkitest.NewClock(t0.Add(50 * time.Minute))
	cert := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	h := startRenewer(t, cert, clock, ca, 0.5)
	select {
	case answer := <-h.calls:
		answer <- renewAnswer{cert: pkitest.Issue(t, ca, agentID(t, "a"), clock.Now(), time.Hour)}
	case <-h.ctx().Done():
		t.Fatal("an overdue certificate was not renewed at once")
	}
	<-h.renewed
}

func TestRenewerRefusesMissingInputs(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	cert := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	if err := (&pki.Renewer{}).Run(context.Background(), cert); err == nil {
		t.Error("Run without Renew succeeded")
	}
	r := &pki.Renewer{Renew: func(context.Context) (*tls.Certificate, error) { return nil, nil }}
	if err := r.Run(context.Background(), nil); err == nil {
		t.Error("Run without a certificate succeeded")
	}
}

func TestRenewerStopsWhenCancelled(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-time.Hour))
	clock := pkitest.NewClock(t0)
	cert := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	h := startRenewer(t, cert, clock, ca, 0.5)
	h.nextWake()
	h.cancel()
	if err := <-h.done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	h.done <- nil
}
