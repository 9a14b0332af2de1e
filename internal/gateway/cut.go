package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Ending a caller's access mid-call. When the gateway ends a session (its
// delegation lapsed, its peer lost access) or closes a peer's connection,
// the requests in flight on it end too. Each one whose answer has not gone
// out gets, before its stream ends, a JSON-RPC error for its own id in the
// shape of a refusal: CodeDenied, a message naming the reason, and
// data.reason and data.event_id of the audit event that recorded the
// ending. The client then knows its access ended and why, instead of
// seeing a stream end without an answer (which a connector reports as an
// unreachable gateway, sending its operator after a network problem).
//
// The cause travels as the cancellation cause (context.Cause) of the
// session's context and of each request's: a *cutError. A stream with no
// request in flight (a GET stream) just ends.

// cutError is why the gateway ended a session or connection: the reason
// code and the audit event that recorded it.
type cutError struct {
	why     reason.Code
	eventID string
}

func (e *cutError) Error() string {
	return "ended by the gateway: " + string(e.why) + " (event " + e.eventID + ")"
}

// cutOf returns the cutError ctx was cancelled with, or nil.
func cutOf(ctx context.Context) *cutError {
	var c *cutError
	if errors.As(context.Cause(ctx), &c) {
		return c
	}
	return nil
}

// cutGrace bounds how long closing a peer's connection waits for its
// requests in flight to write the error that says why.
const cutGrace = 2 * time.Second

// cutMessage is the error message a request cut short gets.
func cutMessage(why reason.Code) string {
	if m, ok := notAdmitted[why]; ok {
		return "access ended (" + string(why) + "): " + m
	}
	switch why {
	case reason.DelegationRevoked:
		return "access ended (delegation_revoked): the delegation this call was made with has been revoked; the person it acts for must delegate again"
	case reason.DelegationExpired:
		return "access ended (delegation_expired): the delegation this call was made with has expired; the person it acts for must delegate again"
	}
	return "access ended (" + string(why) + "): the gateway ended this caller's session; its audit event says why"
}

// cutResponse is the JSON-RPC error response to id for c.
func cutResponse(id json.RawMessage, c *cutError) []byte {
	data, _ := json.Marshal(struct {
		Reason  reason.Code `json:"reason"`
		EventID string      `json:"event_id"`
	}{c.why, c.eventID})
	return mcpwire.ErrorResponse(id, mcpwire.Error{Code: CodeDenied, Message: cutMessage(c.why), Data: data})
}

// cuttable prepares a forwarded request to be cut with a reason: its
// context ends with the cause when its session's does or when its
// connection is closed for a reason (or, made with a delegation in no
// session, when its delegation lapses: statelesscut.go), and the writer it returns follows the
// response so that answerCut can tell what may still be written. done
// must be called when the request is over.
func (g *Gateway) cuttable(w http.ResponseWriter, r *http.Request, x *exchange) (*http.Request, *cutWriter, func()) {
	ctx, cancel := context.WithCancelCause(r.Context())
	var stops []func()
	for _, s := range []*session{x.sess, x.streamSess} {
		if s != nil {
			stops = append(stops, s.track(cancel))
		}
	}
	if tc := connOf(r.Context()); tc != nil {
		stops = append(stops, tc.track(cancel))
	}
	stops = append(stops, g.trackStateless(ctx, cancel, x))
	return r.WithContext(ctx), &cutWriter{ResponseWriter: w}, func() {
		for _, stop := range stops {
			stop()
		}
		cancel(nil)
	}
}

// track registers a request in flight on s: cutFor cancels it with its
// cause before it ends the session's context, so that whatever sees the
// session end finds the request's cause set. A session already ended
// (or that ends at its delegation's expiry) passes its cause on too. The
// returned func forgets the request.
func (s *session) track(cancel context.CancelCauseFunc) func() {
	q := &connRequest{cancel: cancel}
	s.mu.Lock()
	if s.reqs == nil {
		s.reqs = make(map[*connRequest]struct{})
	}
	s.reqs[q] = struct{}{}
	s.mu.Unlock()
	if s.ctx.Err() != nil {
		cancel(context.Cause(s.ctx))
	}
	stop := context.AfterFunc(s.ctx, func() { cancel(context.Cause(s.ctx)) })
	return func() {
		stop()
		s.mu.Lock()
		delete(s.reqs, q)
		s.mu.Unlock()
	}
}

// cutRequests cancels the session's requests in flight with cause.
func (s *session) cutRequests(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q := range s.reqs {
		q.cancel(cause)
	}
}

// answerCut writes to w (the auditWriter over cw), after the upstream's
// part of x is over, the error that says why its request was cut, if it
// was cut and its answer is still owed: a POSTed request whose answer did
// not go out (x.outcome is not ok), whose response has not started (a
// JSON error) or is an event stream between two events (an error event).
func (g *Gateway) answerCut(cw *cutWriter, w http.ResponseWriter, r *http.Request, x *exchange) {
	c := cutOf(r.Context())
	if c == nil || r.Method != http.MethodPost || x.msg == nil || x.msg.Kind != mcpwire.KindRequest || x.outcome == audit.OutcomeOK {
		return
	}
	cw.mu.Lock()
	started, sse, between := cw.started, cw.sse, cw.atBoundary()
	cw.mu.Unlock()
	if started && (!sse || !between) {
		return // a JSON answer under way, or an event half written
	}
	b := cutResponse(x.msg.ID, c)
	// The request's event, if not recorded yet, is recorded as closed
	// before the first byte (w is the auditWriter).
	x.outcome = audit.OutcomeClosed
	if !started {
		h := w.Header()
		for _, k := range []string{"Content-Length", "Content-Encoding", "Connection", mcpwire.HeaderSessionID} {
			h.Del(k)
		}
		h.Set("Content-Type", mcpwire.ContentTypeJSON)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusForbidden)
		w.Write(b)
	} else {
		w.Write(append(append([]byte("event: message\ndata: "), b...), "\n\n"...))
	}
	http.NewResponseController(w).Flush()
	g.log.Info("answered a request cut by the gateway", "event_id", x.ev.ID, "reason", c.why, "cut_event_id", c.eventID)
}

// endedByCut reports whether resp, whose body just ended, ended because
// the request was cut: an in-process handler sees its context end and
// returns, which ends the body as an answer would (over a connection the
// transport reports the cancellation as an error instead).
func (u *httpUpstream) endedByCut(resp *http.Response) bool {
	return u.inProcess && resp.Request != nil && cutOf(resp.Request.Context()) != nil
}

// cutWriter follows a forwarded response: whether it has started, whether
// it is an event stream, and the last bytes written, to tell whether an
// event may follow.
type cutWriter struct {
	http.ResponseWriter
	mu      sync.Mutex
	started bool
	sse     bool
	tail    [4]byte
	n       int // bytes of the body written, up to len(tail)
}

func (c *cutWriter) start() {
	if !c.started {
		c.started = true
		c.sse = isEventStream(c.ResponseWriter.Header())
	}
}

func (c *cutWriter) WriteHeader(status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if status >= 200 {
		c.start()
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *cutWriter) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start()
	n, err := c.ResponseWriter.Write(b)
	c.note(b[:n])
	return n, err
}

// note keeps the last bytes of what was written.
func (c *cutWriter) note(b []byte) {
	if len(b) >= len(c.tail) {
		copy(c.tail[:], b[len(b)-len(c.tail):])
		c.n = len(c.tail)
		return
	}
	keep := min(c.n, len(c.tail)-len(b))
	copy(c.tail[:keep], c.tail[c.n-keep:c.n])
	copy(c.tail[keep:], b)
	c.n = keep + len(b)
}

// atBoundary reports whether the stream written so far ends between two
// events: nothing written yet, or a blank line last.
func (c *cutWriter) atBoundary() bool {
	t := string(c.tail[:c.n])
	if t == "" {
		return true
	}
	for _, end := range []string{"\n\n", "\r\r", "\r\n\r\n"} {
		if len(t) >= len(end) && t[len(t)-len(end):] == end {
			return true
		}
	}
	return false
}

// FlushError flushes through (http.ResponseController uses it); a flush
// starts the response like a write.
func (c *cutWriter) FlushError() error {
	c.mu.Lock()
	c.start()
	c.mu.Unlock()
	return http.NewResponseController(c.ResponseWriter).Flush()
}

// Flush is http.Flusher, for code that asserts it.
func (c *cutWriter) Flush() { c.FlushError() }

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// track registers a request in flight on tc, cancelled with the cause when
// tc is cut; the returned func forgets it and tells cut it is over.
func (tc *trackedConn) track(cancel context.CancelCauseFunc) func() {
	q := &connRequest{cancel: cancel, done: make(chan struct{})}
	tc.mu.Lock()
	if tc.reqs == nil {
		tc.reqs = make(map[*connRequest]struct{})
	}
	tc.reqs[q] = struct{}{}
	tc.mu.Unlock()
	return func() {
		tc.mu.Lock()
		delete(tc.reqs, q)
		tc.mu.Unlock()
		close(q.done)
	}
}

// connRequest is a request in flight on a tracked connection.
type connRequest struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// cutRequests cancels every request in flight on tc with cause and returns
// a channel of each, closed when the request is over.
func (tc *trackedConn) cutRequests(cause error) []chan struct{} {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	out := make([]chan struct{}, 0, len(tc.reqs))
	for q := range tc.reqs {
		q.cancel(cause)
		out = append(out, q.done)
	}
	return out
}
