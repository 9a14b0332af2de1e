package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"agentmesh/internal/audit"
	"agentmesh/internal/identity"
	"agentmesh/internal/mcpwire"
)

// exchange is one client HTTP request on its way through the gateway.
type exchange struct {
	peer *peerInfo
	sess *session // the session named by Mcp-Session-Id; nil if none
	body []byte   // the validated POST body, forwarded as is
	msg  *mcpwire.Message
	v    verdict
	ev   *audit.Event
	// stream, if set, is a server-to-client stream the gateway may inject
	// list_changed notifications into.
	stream *stream
	// streamSess is the session stream belongs to.
	streamSess *session
	outcome    string
	recorded   bool
}

func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request) {
	start := g.now()
	p, id, reason := g.identify(r)
	if p == nil {
		g.refuse(w, r, id, reason)
		return
	}
	if tc := connOf(r.Context()); tc != nil && tc.bind(p.ref) {
		g.record(r.Context(), &audit.Event{
			Kind: audit.KindConnection, Src: p.ref.id.String(), SrcAddr: r.RemoteAddr,
			Dst: dstOf(p.state), Decision: audit.Allow, Reason: ReasonAllowed,
			PolicyVersion: versionOf(p.state), Outcome: "accepted",
		})
	}
	ev := &audit.Event{
		ID: audit.NewID(), Kind: audit.KindRequest, Src: p.ref.id.String(), SrcAddr: r.RemoteAddr,
		Dst: dstOf(p.state), PolicyVersion: versionOf(p.state),
	}
	x := &exchange{peer: p, ev: ev}
	switch r.Method {
	case http.MethodPost:
		g.servePost(w, r, x)
	case http.MethodGet, http.MethodDelete:
		ev.Method = r.Method
		if !g.bindSession(w, r, x) {
			return
		}
		if r.Method == http.MethodGet {
			x.stream = newStream(listAll, nil)
			x.streamSess = x.sess
		}
		ev.Decision, ev.Reason = audit.Allow, ReasonAllowed
		g.up.forward(w, r, x)
		if r.Method == http.MethodDelete && x.sess != nil && x.outcome != ReasonUpstream {
			if g.sessions.remove(x.sess) {
				x.sess.cut()
				g.up.sessionDeleted(x.sess)
			}
		}
	default:
		ev.Method = r.Method
		w.Header().Set("Allow", "GET, POST, DELETE")
		g.deny(w, r, x, http.StatusMethodNotAllowed, nil, CodeRejected, ReasonBadHTTP)
	}
	if x.recorded {
		return
	}
	// Allowed requests are recorded once they completed, with latency and
	// outcome; a slow recorder holds the handler (backpressure).
	ev.LatencyUS = g.now().Sub(start).Microseconds()
	ev.Outcome = x.outcome
	g.record(r.Context(), ev)
}

// servePost reads, decodes and decides one POSTed message, then forwards
// it or answers the denial.
func (g *Gateway) servePost(w http.ResponseWriter, r *http.Request, x *exchange) {
	ev := x.ev
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.maxBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			g.deny(w, r, x, http.StatusRequestEntityTooLarge, nil, CodeRejected, ReasonTooLarge)
			return
		}
		x.outcome = "client_gone"
		ev.Decision, ev.Reason = audit.Deny, ReasonBadHTTP
		return
	}
	msgs, batch, err := mcpwire.Decode(body, g.cfg.Limits)
	if err != nil {
		g.deny(w, r, x, http.StatusBadRequest, nil, CodeRejected, ReasonMalformed)
		return
	}
	if batch || len(msgs) != 1 {
		g.deny(w, r, x, http.StatusBadRequest, nil, mcpwire.CodeInvalidRequest, ReasonBatch)
		return
	}
	m := &msgs[0]
	x.body, x.msg = body, m
	ev.Method = m.Method
	if m.Kind == mcpwire.KindResponse {
		ev.Method = "response"
	}
	if reason := headerCheck(r.Header, m); reason != "" {
		g.deny(w, r, x, http.StatusBadRequest, m.ID, CodeRejected, reason)
		return
	}
	if !g.bindSession(w, r, x) {
		return
	}
	v := g.decide(x.peer, m)
	x.v = v
	ev.Tool, ev.Resource, ev.Prompt, ev.ArgsSHA256 = v.tool, v.resource, v.prompt, v.argsHash
	ev.Rule, ev.PolicyVersion = v.rule(), v.version
	if !v.allow {
		status := http.StatusOK
		if m.Kind != mcpwire.KindRequest {
			status = http.StatusForbidden
		}
		g.deny(w, r, x, status, m.ID, v.code, v.reason)
		return
	}
	ev.Decision, ev.Reason = audit.Allow, v.reason
	if m.Method == "subscriptions/listen" && m.Kind == mcpwire.KindRequest {
		var p struct {
			Notifications struct {
				Tools     bool `json:"toolsListChanged"`
				Prompts   bool `json:"promptsListChanged"`
				Resources bool `json:"resourcesListChanged"`
			} `json:"notifications"`
		}
		_ = json.Unmarshal(m.Params, &p)
		var mask listKind
		if p.Notifications.Tools {
			mask |= listTools
		}
		if p.Notifications.Prompts {
			mask |= listPrompts
		}
		if p.Notifications.Resources {
			mask |= listResources | listTemplates
		}
		x.stream = newStream(mask, m.ID)
		x.streamSess = x.sess
		if x.streamSess == nil {
			x.streamSess = g.sessions.statelessFor(g.base, x.peer.ref)
		}
	}
	g.up.forward(w, r, x)
}

// bindSession checks the Mcp-Session-Id of r against its owner. It answers
// the refusal itself and returns false when the request must stop.
func (g *Gateway) bindSession(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	vals := r.Header.Values("Mcp-Session-Id")
	if len(vals) == 0 {
		return true
	}
	var id json.RawMessage
	if x.msg != nil {
		id = x.msg.ID
	}
	if len(vals) > 1 || vals[0] == "" {
		g.deny(w, r, x, http.StatusBadRequest, id, CodeRejected, ReasonBadHTTP)
		return false
	}
	x.ev.Session = vals[0]
	s := g.sessions.get(vals[0])
	if s == nil {
		g.deny(w, r, x, http.StatusNotFound, id, CodeRejected, ReasonUnknownSession)
		return false
	}
	if s.owner != x.peer.ref.id || s.incarnation != x.peer.ref.incarnation {
		// Same answer as an unknown id, so that ids cannot be probed.
		g.log.Warn("session presented by another identity", "session", s.id, "owner", s.owner.String(), "peer", x.peer.ref.id.String())
		g.deny(w, r, x, http.StatusNotFound, id, CodeRejected, ReasonSessionMismatch)
		return false
	}
	x.sess = s
	return true
}

// deny records the denial, then answers it. The event is recorded first, so
// the event id the client sees exists.
func (g *Gateway) deny(w http.ResponseWriter, r *http.Request, x *exchange, status int, id json.RawMessage, code int, reason string) {
	ev := x.ev
	ev.Decision, ev.Reason, ev.Outcome = audit.Deny, reason, "denied"
	if code == CodeRejected || code == mcpwire.CodeInvalidRequest {
		ev.Outcome = "rejected"
	}
	g.record(r.Context(), ev)
	x.recorded = true
	writeRefusal(w, status, id, code, reason, ev.ID)
	x.outcome = ev.Outcome
}

// refuse answers a request whose peer is not admitted, and audits it as a
// connection refusal.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, id identity.ID, reason string) {
	st := g.state.Load()
	ev := &audit.Event{
		ID: audit.NewID(), Kind: audit.KindConnection, Src: id.String(), SrcAddr: r.RemoteAddr,
		Dst: dstOf(st), Decision: audit.Deny, Reason: reason, PolicyVersion: versionOf(st),
		Outcome: "refused",
	}
	g.record(r.Context(), ev)
	g.log.Info("refused peer", "peer", id.String(), "addr", r.RemoteAddr, "reason", reason, "event_id", ev.ID)
	writeRefusal(w, http.StatusForbidden, nil, CodeDenied, reason, ev.ID)
}

// writeRefusal writes a JSON-RPC error response carrying reason and the
// audit event id.
func writeRefusal(w http.ResponseWriter, status int, id json.RawMessage, code int, reason, eventID string) {
	data, _ := json.Marshal(struct {
		Reason  string `json:"reason"`
		EventID string `json:"event_id"`
	}{reason, eventID})
	msg := "denied by policy"
	switch code {
	case CodeRejected:
		msg = "request rejected"
	case mcpwire.CodeInvalidRequest:
		msg = "invalid request"
	}
	b := mcpwire.ErrorResponse(id, mcpwire.Error{Code: code, Message: msg + ": " + reason, Data: data})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// decodeHeaderValue undoes the =?base64?...?= wrapping MCP uses for header
// values that are not plain ASCII.
func decodeHeaderValue(v string) string {
	if inner, ok := strings.CutPrefix(v, "=?base64?"); ok {
		if inner, ok = strings.CutSuffix(inner, "?="); ok {
			if b, err := base64.StdEncoding.DecodeString(inner); err == nil {
				return string(b)
			}
			return "\x00invalid"
		}
	}
	return v
}
