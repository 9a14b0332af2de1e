// Package pkitest provides test doubles for code that uses package pki: a
// fake Clock that tests advance by hand (so that renewal and expiry are
// tested without sleeping), and helpers that make a CA and issue node
// certificates in one call.
package pkitest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// Clock is a fake pki.Clock. Time moves only when Advance or Set is
// called; After channels fire when the time reaches their deadline. The
// zero Clock is not usable; call NewClock.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// changed is closed and replaced whenever a waiter is added, so that
	// WaitForWaiters can block without polling.
	changed chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

var _ pki.Clock = (*Clock)(nil)

// NewClock returns a Clock set to start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the fake time once it has advanced
// by d. A d <= 0 fires at once.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	close(c.changed)
	c.changed = make(chan struct{})
	return ch
}

// Advance moves the time forward by d and fires the channels that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// Set moves the time to t (which may be earlier) and fires the channels
// that are due.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(t)
}

func (c *Clock) setLocked(t time.Time) {
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(t) {
			kept = append(kept, w)
			continue
		}
		w.ch <- t
	}
	c.waiters = kept
}

// Waiters returns the deadlines of pending After calls, earliest first.
func (c *Clock) Waiters() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Time, 0, len(c.waiters))
	for _, w := range c.waiters {
		out = append(out, w.at)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// WaitForWaiters blocks until at least n After calls are pending and
// returns their deadlines, earliest first, or returns ctx's error. Tests
// use it to know that the code under test is waiting before they advance
// the time.
func (c *Clock) WaitForWaiters(ctx context.Context, n int) ([]time.Time, error) {
	for {
		c.mu.Lock()
		ready, changed := len(c.waiters) >= n, c.changed
		c.mu.Unlock()
		if ready {
			return c.Waiters(), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// TrustDomain is the trust domain the helpers use unless told otherwise.
const TrustDomain identity.TrustDomain = "test.mesh"

// NewCA returns a fresh CA for td, valid from now.
func NewCA(tb testing.TB, td identity.TrustDomain, now time.Time) *pki.CA {
	tb.Helper()
	ca, err := pki.NewCA(td, now)
	if err != nil {
		tb.Fatalf("pkitest: new CA: %v", err)
	}
	return ca
}

// ID returns the identity kind/name in td, failing the test if invalid.
func ID(tb testing.TB, td identity.TrustDomain, kind identity.Kind, name string) identity.ID {
	tb.Helper()
	id, err := identity.New(td, kind, identity.Name(name))
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	return id
}

// Issue makes a key and a certificate for id from ca, issued at now with
// lifetime ttl and incarnation "test", ready to use in a tls.Config.
func Issue(tb testing.TB, ca *pki.CA, id identity.ID, now time.Time, ttl time.Duration) *tls.Certificate {
	tb.Helper()
	key, err := pki.NewKey()
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	csrDER, err := pki.CreateCSR(key)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	leaf, der, err := ca.Issue(csr, pki.IssueRequest{ID: id, Incarnation: "test", TTL: ttl, Now: now, DNSNames: []string{"localhost"}})
	if err != nil {
		tb.Fatalf("pkitest: %v", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
