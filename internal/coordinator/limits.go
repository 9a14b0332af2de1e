package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Limits bound what network clients can hold of the coordinator. Join is
// open to anybody who can reach the port, so everything a client without
// a certificate can make the coordinator hold is bounded: its connections
// (see connlimit: counted apart from the nodes' own, which present a
// certificate of the mesh CA), the time to send headers and a join body,
// the join body's size, how often one source may try to join, and how many
// joins are read at once. The zero value of each field means its default.
type Limits struct {
	// Conn bounds connections by budget: handshaking, unauthenticated,
	// authenticated (connlimit's defaults). OnRefuse is the coordinator's.
	Conn connlimit.Config
	// ReadHeaderTimeout bounds reading a request's headers (10s); it also
	// bounds the TLS handshake.
	ReadHeaderTimeout time.Duration
	// JoinBodyTimeout bounds reading a join request's body (10s).
	JoinBodyTimeout time.Duration
	// BodyTimeout bounds reading any other request's body (2m), which only
	// authenticated nodes get to send: an audit batch may be large.
	BodyTimeout time.Duration
	// JoinRate is the number of join attempts per second one source gets
	// back (1), JoinBurst how many it may make at once (20).
	JoinRate  float64
	JoinBurst int
	// MaxJoinsInFlight bounds the join requests being read or handled at
	// once, from all sources together (32).
	MaxJoinsInFlight int
}

// Defaults for the zero fields of Limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultJoinBodyTimeout   = 10 * time.Second
	DefaultBodyTimeout       = 2 * time.Minute
	DefaultJoinRate          = 1.0
	DefaultJoinBurst         = 20
	DefaultMaxJoinsInFlight  = 32
)

func (l Limits) withDefaults() Limits {
	orDefault(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	orDefault(&l.JoinBodyTimeout, DefaultJoinBodyTimeout)
	orDefault(&l.BodyTimeout, DefaultBodyTimeout)
	orDefault(&l.JoinRate, DefaultJoinRate)
	orDefault(&l.JoinBurst, DefaultJoinBurst)
	orDefault(&l.MaxJoinsInFlight, DefaultMaxJoinsInFlight)
	return l
}

// orDefault sets *v to d unless it is positive.
func orDefault[T int | float64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// refusalDetail says in words what each bound's refusal means.
var refusalDetail = map[reason.Code]string{
	reason.TooManyConnections: "connection refused or closed: too many connections (from this source, or without a certificate, or in TLS handshake)",
	reason.HandshakeTimeout:   "TLS handshake not finished in time",
	reason.ConnLifetime:       "connection without a client certificate held open past its lifetime",
}

// refuseConn records a connection refused or closed by the listener's
// bounds.
func (c *Coordinator) refuseConn(remote net.Addr, why reason.Code) {
	ev := c.event(audit.KindConnection, "", "coordinator")
	if remote != nil {
		ev.SrcAddr = remote.String()
	}
	ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, why, audit.OutcomeRefused, refusalDetail[why]
	c.refuse(context.Background(), ev)
}

// ConnStats returns how many connections the coordinator holds in each
// budget (see connlimit), for tests and operators.
func (c *Coordinator) ConnStats() connlimit.Stats { return c.limiter.Stats() }

// bodyError is a request body that could not be read: the answer's status,
// a reason code and a message.
type bodyError struct {
	status  int
	code    reason.Code
	outcome audit.Outcome
	msg     string
}

func (e *bodyError) Error() string { return e.msg }

// readBody reads r's whole body, at most max bytes within timeout, and
// replaces r.Body with what it read, so a handler decodes from memory. The
// deadline is lifted once the body is in: a handler that then waits (the
// netmap long poll, a slow audit append) is not cut off by it.
func readBody(w http.ResponseWriter, r *http.Request, max int64, timeout time.Duration) *bodyError {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if r.ContentLength > max {
		return &bodyError{http.StatusRequestEntityTooLarge, reason.TooLarge, audit.OutcomeRejected, fmt.Sprintf("body of %d bytes is over the limit of %d", r.ContentLength, max)}
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	rc.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &bodyError{http.StatusRequestTimeout, reason.BodyTimeout, audit.OutcomeRefused, fmt.Sprintf("body not received within %v", timeout)}
	case err != nil:
		return &bodyError{http.StatusBadRequest, reason.IncompleteBody, audit.OutcomeClientGone, "the body ended early: " + err.Error()}
	case int64(len(b)) > max:
		return &bodyError{http.StatusRequestEntityTooLarge, reason.TooLarge, audit.OutcomeRejected, fmt.Sprintf("body is over the limit of %d bytes", max)}
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return nil
}

// withBody reads the body of an authenticated request (see readBody)
// before h runs; a body too slow or too large is refused and audited.
func (c *Coordinator) withBody(max int64, h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, who caller) {
		if be := readBody(w, r, max, c.limits.BodyTimeout); be != nil {
			ev := c.event(audit.KindConnection, who.actor(), "coordinator")
			ev.SrcAddr, ev.Method = r.RemoteAddr, r.Method+" "+r.URL.Path
			ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, be.code, be.outcome, be.msg
			c.refuse(r.Context(), ev)
			closeAfter(w)
			writeError(w, be.status, be.code, be.msg)
			return
		}
		h(w, r, who)
	}
}

// closeAfter makes the server close the connection after this answer
// instead of reading what is left of the request: a refused client may
// still be sending, slowly.
func closeAfter(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.NewResponseController(w).SetReadDeadline(time.Now())
}

// sourceOf is the source a request counts against for rate limits.
func sourceOf(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return connlimit.SourceKey(net.TCPAddrFromAddrPort(ap))
}
