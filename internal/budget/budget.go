// Package budget bounds what peers can make a server hold: bytes of request
// bodies in memory, sessions, upstream processes, requests in flight. A
// [Budget] is a count of units with a bound in total and a bound per peer,
// so that one peer can never take all of it; a [Lease] holds units until it
// is released. [BodyReader] reads an HTTP request body into memory within a
// Budget of bytes, a size limit and a read deadline. The MCP gateway and the
// model gateway share both.
//
// # Threat model
//
// The peer is authenticated (it holds a valid certificate and a grant) but
// hostile: it opens sessions in a loop, sends many large bodies slowly, or
// holds requests open, to exhaust the server's memory, processes or file
// descriptors and so deny service to every other peer. Everything such a
// peer can make the server hold is reserved in a Budget before it is
// allocated or started, and refused at once when the reservation fails:
// nothing queues without bound, and a refusal costs the server no more than
// the answer. A body's bytes are reserved from its Content-Length before a
// byte is read, or as they arrive when the length is not declared, so a
// body the budget cannot hold is refused before it is in memory; a body
// that trickles in must arrive whole within a deadline.
//
// What a Budget does not bound: the connections and TLS handshakes before a
// peer is identified (the HTTP server's header timeout does), the CPU a
// peer's allowed requests cost, and what an upstream sends back.
package budget

import (
	"errors"
	"fmt"
	"sync"
)

// DefaultRequestsPerPeer is how many requests one peer may have in flight
// at a gateway at once, open streams included, unless configured
// otherwise: both gateways share it. A real agent has a handful; 256 is far
// beyond that, yet bounds what a peer looping on requests can hold.
const DefaultRequestsPerPeer = 256

// Errors of Take and Grow; match them with errors.Is.
var (
	// ErrPeerShare: the peer already holds its share of the budget. The
	// peer, not the server, is busy (HTTP 429).
	ErrPeerShare = errors.New("over the peer's share of the budget")
	// ErrExhausted: the budget as a whole is taken. The server is busy
	// (HTTP 503).
	ErrExhausted = errors.New("budget exhausted")
)

// Budget counts units (bytes, sessions, processes) held by peers, and
// refuses a reservation that would take more than Total in all, or more
// than PerPeer for one peer. It is safe for concurrent use; create it with
// New.
type Budget struct {
	total, perPeer int64

	mu   sync.Mutex
	used int64
	peak int64
	by   map[string]int64
	// changed, made by Changed, is closed at the next change of used.
	changed chan struct{}
}

// New returns a budget of total units with at most perPeer for any one
// peer. A bound of zero or less is no bound.
func New(total, perPeer int64) *Budget {
	return &Budget{total: total, perPeer: perPeer, by: make(map[string]int64)}
}

// Take reserves n units for peer, all or none: it fails with ErrPeerShare
// or ErrExhausted (wrapped with the numbers) and then reserves nothing. The
// lease holds the units until it is released.
func (b *Budget) Take(peer string, n int64) (*Lease, error) {
	if err := b.take(peer, n); err != nil {
		return nil, err
	}
	return &Lease{b: b, peer: peer, n: n}, nil
}

func (b *Budget) take(peer string, n int64) error {
	if n < 0 {
		return fmt.Errorf("budget: negative reservation %d", n)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// The peer's share is checked first: a peer over its share is told so
	// (429) even when the whole budget is also taken.
	if b.perPeer > 0 && b.by[peer]+n > b.perPeer {
		return fmt.Errorf("%w: %d of %d held, %d more asked", ErrPeerShare, b.by[peer], b.perPeer, n)
	}
	if b.total > 0 && b.used+n > b.total {
		return fmt.Errorf("%w: %d of %d held, %d more asked", ErrExhausted, b.used, b.total, n)
	}
	b.used += n
	b.by[peer] += n
	b.peak = max(b.peak, b.used)
	b.signalLocked()
	return nil
}

func (b *Budget) signalLocked() {
	if b.changed != nil {
		close(b.changed)
		b.changed = nil // made again only when somebody watches
	}
}

func (b *Budget) give(peer string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if left := b.by[peer] - n; left > 0 {
		b.by[peer] = left
	} else {
		delete(b.by, peer) // a peer that holds nothing costs no memory
	}
	b.signalLocked()
}

// Changed returns a channel that is closed the next time the units held
// change, for whoever watches the budget (a test, a metric) without
// polling it.
func (b *Budget) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

// Used returns the units held now, by every peer together.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// UsedBy returns the units peer holds now.
func (b *Budget) UsedBy(peer string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.by[peer]
}

// Peak returns the most units ever held at once.
func (b *Budget) Peak() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// Lease is units of a Budget held by one peer. Its methods are safe for
// concurrent use; a nil *Lease holds nothing, so that code with an optional
// lease can release it unconditionally.
type Lease struct {
	b    *Budget
	peer string

	mu       sync.Mutex
	n        int64
	released bool
}

// Grow reserves n more units, all or none, with Take's errors. A released
// lease cannot grow.
func (l *Lease) Grow(n int64) error {
	if l == nil {
		return errors.New("budget: grow of a nil lease")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return errors.New("budget: grow after release")
	}
	if err := l.b.take(l.peer, n); err != nil {
		return err
	}
	l.n += n
	return nil
}

// Size returns the units the lease holds (zero once released).
func (l *Lease) Size() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// Release gives the units back. It is idempotent, so every path that ends
// what the lease stands for may call it.
func (l *Lease) Release() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	l.released = true
	l.b.give(l.peer, l.n)
	l.n = 0
}
