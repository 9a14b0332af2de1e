package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/internal/backoff"
)

// Clock is the time source of a Renewer. SystemClock is the real one;
// pkitest.Clock is a fake that tests advance by hand.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After is time.After.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Renewal timing defaults.
const (
	// RenewAt is the fraction of a certificate's lifetime after which it is
	// renewed, before jitter.
	RenewAt = 2.0 / 3.0
	// RenewJitter is the relative jitter applied to the renewal time, so
	// that nodes started together do not renew together.
	RenewJitter = 0.10
	// DefaultMinBackoff and DefaultMaxBackoff bound the delay between
	// failed renewal attempts.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = time.Minute
)

// Renewer keeps a certificate fresh: it renews at about two thirds of the
// current certificate's lifetime (±10%), retries with exponential backoff
// (package backoff) while renewal fails, and gives up when the certificate
// expires. Set the
// fields, then call Run once. Renew is required; the other fields have
// defaults.
type Renewer struct {
	// Renew obtains a new certificate (for example by sending a CSR to the
	// coordinator). Its result must have a parseable leaf.
	Renew func(ctx context.Context) (*tls.Certificate, error)
	// OnRenew, if set, is called after each successful renewal with the
	// new certificate, after Current returns it.
	OnRenew func(*tls.Certificate)
	// Clock is the time source; nil means SystemClock.
	Clock Clock
	// Logger receives renewals and failures; nil discards them.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the delay between failed attempts;
	// zero means DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Rand returns a number in [0, 1) for jitter; nil means math/rand/v2.
	// Tests set it to make timing exact.
	Rand func() float64

	current atomic.Pointer[tls.Certificate]
}

// Current returns the certificate in use: the initial one given to Run,
// then each renewed one. It is nil before Run is called.
func (r *Renewer) Current() *tls.Certificate { return r.current.Load() }

// Run stores initial as the current certificate and renews it until ctx is
// cancelled, which returns nil. If the certificate expires before a renewal
// succeeds, Run returns an error matching ErrExpiredBeforeRenewal that
// wraps the last failure: the node must join again. Run calls Renew and
// OnRenew on its own goroutine, one at a time.
func (r *Renewer) Run(ctx context.Context, initial *tls.Certificate) error {
	if r.Renew == nil {
		return errors.New("renew: no Renew function")
	}
	leaf, err := leafOf(initial)
	if err != nil {
		return fmt.Errorf("renew: initial certificate: %w", err)
	}
	r.current.Store(initial)
	clock := r.Clock
	if clock == nil {
		clock = SystemClock{}
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	minB, maxB := r.MinBackoff, r.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB < minB {
		maxB = max(DefaultMaxBackoff, minB)
	}
	for first := true; ; first = false {
		wait := renewalTime(leaf, r.random()).Sub(clock.Now())
		// An initial certificate that is already due is renewed at once. A
		// renewed one that is already due (a coordinator handing out old
		// certificates, a clock jump) waits a little rather than spinning.
		if !first && wait < minB {
			wait = minB
		}
		if backoff.Sleep(ctx, clock, wait) != nil {
			return nil
		}
		next, nextLeaf, err := r.attempt(ctx, clock, leaf, log, minB, maxB)
		if err != nil || next == nil {
			return err
		}
		leaf = nextLeaf
		r.current.Store(next)
		log.Info("certificate renewed", "expires", leaf.NotAfter)
		if r.OnRenew != nil {
			r.OnRenew(next)
		}
	}
}

// attempt calls Renew until it succeeds, ctx ends (nil, nil, nil) or the
// certificate expires.
func (r *Renewer) attempt(ctx context.Context, clock Clock, leaf *x509.Certificate, log *slog.Logger, minB, maxB time.Duration) (*tls.Certificate, *x509.Certificate, error) {
	retry := backoff.Backoff{Min: minB, Max: maxB, Rand: r.random}
	for {
		next, err := r.Renew(ctx)
		if err == nil {
			var nextLeaf *x509.Certificate
			if nextLeaf, err = leafOf(next); err == nil {
				return next, nextLeaf, nil
			}
		}
		if ctx.Err() != nil {
			return nil, nil, nil
		}
		left := leaf.NotAfter.Sub(clock.Now())
		if left <= 0 {
			return nil, nil, fmt.Errorf("renew: %w at %v: %w", ErrExpiredBeforeRenewal, leaf.NotAfter, err)
		}
		wait := min(retry.Next(), left)
		log.Warn("certificate renewal failed; will retry", "err", err, "retry_in", wait, "expires", leaf.NotAfter)
		if backoff.Sleep(ctx, clock, wait) != nil {
			return nil, nil, nil
		}
	}
}

func (r *Renewer) random() float64 {
	if r.Rand != nil {
		return r.Rand()
	}
	return rand.Float64()
}

// renewalTime is NotBefore + lifetime * RenewAt * (1 ± RenewJitter), with u
// in [0, 1) choosing the point in the jitter range.
func renewalTime(leaf *x509.Certificate, u float64) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	f := RenewAt * (1 + RenewJitter*(2*u-1))
	return leaf.NotBefore.Add(time.Duration(float64(life) * f))
}

// leafOf returns c's parsed leaf, parsing it if c.Leaf is unset.
func leafOf(c *tls.Certificate) (*x509.Certificate, error) {
	if c == nil || len(c.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	return x509.ParseCertificate(c.Certificate[0])
}
