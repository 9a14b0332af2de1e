// Package connlimit bounds what network clients that have not proved who
// they are can hold of a TLS server: connections, the time they take to
// handshake, the time they stay connected, and how often they may attempt
// an expensive operation (a token bucket per source, RateLimiter).
//
// # Threat model
//
// Anybody who can reach the port can open connections, never finish the
// TLS handshake, or finish it without a certificate and then send a
// request one byte at a time. Without bounds each such connection holds a
// file descriptor, a goroutine and buffers for as long as the client
// likes, until the server runs out and stops serving the nodes that do
// hold certificates (the coordinator's renewals and netmaps; with them, the
// whole mesh within one certificate lifetime).
//
// A Listener sorts every connection into one of three budgets:
//
//   - handshaking: accepted, TLS handshake not finished. Bounded in number
//     (globally and per source) and in time (HandshakeTimeout).
//   - unauthenticated: handshake finished without a certificate that the
//     server's check accepts. Bounded in number (globally and per source)
//     and in time (UnauthenticatedLifetime, however busy the connection).
//   - authenticated: handshake finished with an accepted certificate.
//     Bounded in number only; these are the mesh's own nodes, and they do
//     not compete with the other two budgets, so a flood of anonymous
//     connections cannot crowd them out once their handshake is done.
//
// When the handshaking or the unauthenticated budget is full, the
// connection that has held its place longest is closed to make room
// (among handshakes, one whose client has not even sent its ClientHello
// goes first): an honest client, which handshakes and asks within
// milliseconds, then still gets through, while a slow one gives its place
// up. A source over its own
// limit is refused instead, so that one source cannot churn everybody
// else's connections. Every refusal and every connection closed for a
// bound is reported to Config.OnRefuse with a stable reason code
// (reason.TooManyConnections, reason.HandshakeTimeout,
// reason.ConnLifetime), so it can be audited.
//
// A source is an IPv4 address or an IPv6 /64 (SourceKey): one host, or one
// customer network, whatever addresses it picks inside it.
//
// Out of scope: the bandwidth and CPU a flood costs (a firewall's job), and
// what an authenticated client does (it is identified, and audited).
package connlimit

import (
	"container/list"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// ErrTooMany is returned by Admit when the connection's budget is full.
var ErrTooMany = errors.New("connlimit: too many connections")

// Defaults for the zero fields of Config.
const (
	DefaultMaxHandshaking              = 256
	DefaultMaxHandshakingPerSource     = 16
	DefaultHandshakeTimeout            = 10 * time.Second
	DefaultMaxUnauthenticated          = 128
	DefaultMaxUnauthenticatedPerSource = 8
	DefaultUnauthenticatedLifetime     = time.Minute
	DefaultMaxAuthenticated            = 8192
)

// Config bounds a Listener. The zero value of each field means its default.
type Config struct {
	MaxHandshaking          int
	MaxHandshakingPerSource int
	HandshakeTimeout        time.Duration

	MaxUnauthenticated          int
	MaxUnauthenticatedPerSource int
	UnauthenticatedLifetime     time.Duration

	MaxAuthenticated int

	// OnRefuse, if set, is told of every connection refused or closed for
	// a bound, with the client's address. It runs on the accept path or a
	// timer, so it must be quick; it is not called once the listener is
	// closed.
	OnRefuse func(remote net.Addr, why reason.Code)
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxHandshaking, DefaultMaxHandshaking)
	def(&c.MaxHandshakingPerSource, DefaultMaxHandshakingPerSource)
	def(&c.MaxUnauthenticated, DefaultMaxUnauthenticated)
	def(&c.MaxUnauthenticatedPerSource, DefaultMaxUnauthenticatedPerSource)
	def(&c.MaxAuthenticated, DefaultMaxAuthenticated)
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.UnauthenticatedLifetime <= 0 {
		c.UnauthenticatedLifetime = DefaultUnauthenticatedLifetime
	}
	return c
}

// budget says where a connection is counted. The handshaking budget is
// kept in two queues, silent and hello, so that a connection whose client
// has not even sent its ClientHello yet is the first to make room; closed
// is a connection that holds no place.
type budget uint8

const (
	silent budget = iota // handshaking, no ClientHello yet
	hello                // handshaking, ClientHello received
	unauthenticated
	authenticated
	closed
)

// class is what a budget counts against per source: handshaking (silent
// and hello together) or unauthenticated.
func (b budget) class() int {
	if b == unauthenticated {
		return 1
	}
	return 0
}

// Listener is a net.Listener that bounds its connections (see the package
// doc). Use ServerTLS to make the TLS configuration that sorts them.
type Listener struct {
	inner net.Listener
	cfg   Config

	mu        sync.Mutex
	queues    [3]*list.List // silent, hello, unauthenticated: oldest first
	nAuth     int
	perSource map[string]*[2]int // handshaking, unauthenticated per source
	isClosed  bool
}

// Stats is a snapshot of a Listener's budgets.
type Stats struct {
	Handshaking, Unauthenticated, Authenticated int
}

// NewListener wraps inner.
func NewListener(inner net.Listener, cfg Config) *Listener {
	return &Listener{
		inner:     inner,
		cfg:       cfg.withDefaults(),
		queues:    [3]*list.List{list.New(), list.New(), list.New()},
		perSource: make(map[string]*[2]int),
	}
}

// Accept waits for a connection that fits the handshaking budget. A
// connection over its source's limit is closed and reported, and Accept
// waits for the next; when the global budget is full, the longest
// handshaking connection is closed to make room.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		c := &conn{Conn: raw, l: l, src: SourceKey(raw.RemoteAddr())}
		evicted, ok := l.add(c)
		if evicted != nil {
			evicted.refuse(reason.TooManyConnections)
		}
		if !ok {
			l.report(raw.RemoteAddr(), reason.TooManyConnections)
			raw.Close()
			continue
		}
		return c, nil
	}
}

// add puts c in the handshaking budget and starts its handshake timer. It
// returns a connection to close for room (the longest silent one, else
// the longest one handshaking), and false if c's source is over its limit.
func (l *Listener) add(c *conn) (*conn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	counts := l.perSource[c.src]
	if counts != nil && counts[0] >= l.cfg.MaxHandshakingPerSource {
		return nil, false
	}
	var evicted *conn
	if l.queues[silent].Len()+l.queues[hello].Len() >= l.cfg.MaxHandshaking {
		q := l.queues[silent]
		if q.Len() == 0 {
			q = l.queues[hello]
		}
		evicted = l.removeLocked(q.Front().Value.(*conn))
	}
	l.enterLocked(c, silent)
	c.timer = time.AfterFunc(l.cfg.HandshakeTimeout, func() { c.expire(reason.HandshakeTimeout, silent, hello) })
	return evicted, true
}

// helloReceived moves c, if it is still silent, to the hello queue: its
// client has started the handshake.
func (l *Listener) helloReceived(nc net.Conn) {
	c, ok := nc.(*conn)
	if !ok || c.l != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.budget == silent {
		l.queues[silent].Remove(c.elem)
		c.elem = l.queues[hello].PushBack(c)
		c.budget = hello
	}
}

// enterLocked counts c in budget b.
func (l *Listener) enterLocked(c *conn, b budget) {
	c.budget = b
	if b == authenticated {
		l.nAuth++
		return
	}
	c.elem = l.queues[b].PushBack(c)
	counts := l.perSource[c.src]
	if counts == nil {
		counts = new([2]int)
		l.perSource[c.src] = counts
	}
	counts[b.class()]++
}

// removeLocked takes c out of its budget, leaving it closed, and returns c
// (nil if it held none).
func (l *Listener) removeLocked(c *conn) *conn {
	switch c.budget {
	case closed:
		return nil
	case authenticated:
		l.nAuth--
	default:
		l.queues[c.budget].Remove(c.elem)
		c.elem = nil
		counts := l.perSource[c.src]
		counts[c.budget.class()]--
		if counts[0] == 0 && counts[1] == 0 {
			delete(l.perSource, c.src)
		}
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.budget = closed
	return c
}

// Admit moves c, a connection this listener accepted whose TLS handshake
// has just finished, from the handshaking budget into the authenticated
// one or, if authenticated is false, the unauthenticated one. It returns
// ErrTooMany, and reports the refusal, when c's source has no room left
// there or the authenticated budget is full; the caller fails the
// handshake. A full unauthenticated budget closes its longest-held
// connection instead. Admitting a connection twice changes nothing.
func (l *Listener) Admit(nc net.Conn, authenticated bool) error {
	c, ok := nc.(*conn)
	if !ok || c.l != l {
		return fmt.Errorf("connlimit: admit: %T is not a connection of this listener", nc)
	}
	evicted, err := l.admit(c, authenticated)
	if evicted != nil {
		evicted.refuse(reason.TooManyConnections)
	}
	if err != nil {
		l.report(c.RemoteAddr(), reason.TooManyConnections)
	}
	return err
}

func (l *Listener) admit(c *conn, auth bool) (*conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch c.budget {
	case closed:
		return nil, net.ErrClosed
	case unauthenticated, authenticated:
		return nil, nil
	}
	if auth {
		if l.nAuth >= l.cfg.MaxAuthenticated {
			return nil, ErrTooMany
		}
		l.removeLocked(c)
		l.enterLocked(c, authenticated)
		return nil, nil
	}
	if counts := l.perSource[c.src]; counts[1] >= l.cfg.MaxUnauthenticatedPerSource {
		return nil, ErrTooMany
	}
	var evicted *conn
	if l.queues[unauthenticated].Len() >= l.cfg.MaxUnauthenticated {
		evicted = l.removeLocked(l.queues[unauthenticated].Front().Value.(*conn))
	}
	l.removeLocked(c)
	l.enterLocked(c, unauthenticated)
	c.timer = time.AfterFunc(l.cfg.UnauthenticatedLifetime, func() { c.expire(reason.ConnLifetime, unauthenticated) })
	return evicted, nil
}

// ServerTLS returns base (which it does not change) made to sort each
// connection when its handshake finishes: authenticated(cs) says whether
// the client proved an identity the server accepts (typically: it
// presented a certificate that chains to the server's CA). base's own
// GetConfigForClient and VerifyConnection still run first. The listener
// handed to tls.NewListener with this configuration must be l.
func (l *Listener) ServerTLS(base *tls.Config, authenticated func(cs tls.ConnectionState) bool) *tls.Config {
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		l.helloReceived(hi.Conn)
		inner := base
		if base.GetConfigForClient != nil {
			c, err := base.GetConfigForClient(hi)
			if err != nil {
				return nil, err
			}
			if c != nil {
				inner = c
			}
		}
		per := inner.Clone()
		per.GetConfigForClient = nil
		verify, nc := inner.VerifyConnection, hi.Conn
		per.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			return l.Admit(nc, authenticated(cs))
		}
		return per, nil
	}
	return cfg
}

// Stats returns the number of connections in each budget.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Handshaking: l.queues[silent].Len() + l.queues[hello].Len(), Unauthenticated: l.queues[unauthenticated].Len(), Authenticated: l.nAuth}
}

// Close closes the inner listener. Connections already accepted stay open
// (their server closes them); refusals are no longer reported.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.isClosed = true
	l.mu.Unlock()
	return l.inner.Close()
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

func (l *Listener) report(remote net.Addr, r reason.Code) {
	l.mu.Lock()
	done := l.isClosed
	l.mu.Unlock()
	if !done && l.cfg.OnRefuse != nil {
		l.cfg.OnRefuse(remote, r)
	}
}

// conn is an accepted connection that knows its budget.
type conn struct {
	net.Conn
	l   *Listener
	src string

	// Guarded by l.mu.
	budget budget
	elem   *list.Element
	timer  *time.Timer
}

// Close gives up the connection's place and closes it.
func (c *conn) Close() error {
	c.l.mu.Lock()
	c.l.removeLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// refuse closes a connection taken out of its budget for a bound.
func (c *conn) refuse(r reason.Code) {
	c.l.report(c.RemoteAddr(), r)
	c.Conn.Close()
}

// expire closes c for reason r if it is still in one of the budgets in
// when its timer fires.
func (c *conn) expire(r reason.Code, in ...budget) {
	c.l.mu.Lock()
	still := slices.Contains(in, c.budget)
	if still {
		c.l.removeLocked(c)
	}
	c.l.mu.Unlock()
	if still {
		c.refuse(r)
	}
}

// SourceKey returns the source a connection from addr counts against: its
// IPv4 address, or the /64 of an IPv6 one, or the whole address string
// for anything else.
func SourceKey(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}
