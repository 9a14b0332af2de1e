package modelgw

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/modelwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// A streamed completion cut because its caller lost access (a revoked
// peer, a lapsed delegation) ends with an OpenAI-style error event naming
// the reason, when the stream is between two events: the client learns
// its access ended instead of seeing the stream stop. The event carries
// the id of the request's own audit event, which records the cut
// (outcome stream_cut).

// cutError is why the gateway cut a request: the cancellation cause of
// its context.
type cutError struct{ why reason.Code }

func (e *cutError) Error() string { return "cut by the model gateway: " + string(e.why) }

// tellCut writes the error event of a stream cut with a cutError, if
// between says an event may follow. x's event (recorded when the stream
// is finished) gets its id now.
func (g *Gateway) tellCut(w http.ResponseWriter, r *http.Request, x *request, between bool) {
	var c *cutError
	if !between || !errors.As(context.Cause(r.Context()), &c) {
		return
	}
	if x.ev.ID == "" {
		x.ev.ID = audit.NewID()
	}
	msg := "access ended (" + string(c.why) + "): the gateway cut this request because its caller no longer has access"
	switch c.why {
	case reason.DelegationRevoked:
		msg = "access ended (delegation_revoked): the delegation this request was made with has been revoked; the person it acts for must delegate again"
	case reason.DelegationExpired:
		msg = "access ended (delegation_expired): the delegation this request was made with has expired; the person it acts for must delegate again"
	}
	b, _ := json.Marshal(modelwire.ErrorBody{
		Error:  modelwire.ErrorDetail{Type: "permission_denied", Code: c.why, Message: msg, AuditEvent: x.ev.ID},
		Reason: c.why, AuditEvent: x.ev.ID,
	})
	if _, err := w.Write(append(append([]byte("data: "), b...), "\n\n"...)); err == nil {
		http.NewResponseController(w).Flush()
	}
}

// eventTail keeps the last bytes of a relayed stream, to tell whether it
// ends between two events.
type eventTail struct {
	b [4]byte
	n int
}

func (t *eventTail) note(p []byte) {
	for _, c := range p[max(0, len(p)-len(t.b)):] {
		if t.n == len(t.b) {
			copy(t.b[:], t.b[1:])
			t.n--
		}
		t.b[t.n] = c
		t.n++
	}
}

// atBoundary reports whether the stream so far is empty or ends with a
// blank line.
func (t *eventTail) atBoundary() bool {
	s := string(t.b[:t.n])
	if s == "" {
		return true
	}
	for _, end := range []string{"\n\n", "\r\r", "\r\n\r\n"} {
		if len(s) >= len(end) && s[len(s)-len(end):] == end {
			return true
		}
	}
	return false
}
