package gateway

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
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
	outcome    audit.Outcome
	recorded   bool
	// entered is the session this request counts as in flight for.
	entered *session
	// start is when the request arrived; the event's latency runs from it.
	start time.Time
	// upstreamStart is when the request was handed to the upstream;
	// streamed is set when its answer is an event stream (metrics).
	upstreamStart time.Time
	streamed      bool

	// bodyLease holds body's bytes in the body budget until the request
	// is done.
	bodyLease *budget.Lease
	// slots are what the session this request may create holds; the
	// session takes them over, else they are released with the request.
	slots sessionSlots
	// inFlight counts the request among its peer's until it is done.
	inFlight *budget.Lease
	// trace is the request's tracing (nothing when tracing is off).
	trace traceState
}

func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request) {
	start := g.now()
	p, src, user, why := g.identify(r)
	if p == nil {
		g.refuse(w, r, src, user, why)
		return
	}
	if tc := connOf(r.Context()); tc != nil && tc.bind(p.ref) {
		g.record(r.Context(), &audit.Event{
			Kind: audit.KindConnection, Src: src, SrcAddr: r.RemoteAddr,
			Dst: p.state.Dst(), Decision: audit.Allow, Reason: reason.Allowed,
			PolicyVersion: p.state.PolicyVersion(), Outcome: audit.OutcomeAccepted, User: user,
		})
	}
	ev := &audit.Event{
		ID: audit.NewID(), Kind: audit.KindRequest, Src: src, SrcAddr: r.RemoteAddr,
		Dst: p.state.Dst(), PolicyVersion: p.state.PolicyVersion(), User: user,
	}
	x := &exchange{peer: p, ev: ev, start: start}
	g.traceBegin(r, x)
	defer g.traceEnd(r, x)
	defer func() {
		if !x.streamed && g.cfg.Metrics != nil {
			g.cfg.Metrics.Total(g.now().Sub(start))
		}
		if x.entered != nil {
			x.entered.leave(g.now())
		}
		x.bodyLease.Release()
		x.slots.release()
		x.inFlight.Release()
	}()
	if !g.admitRequest(w, r, x) || !g.admitDelegation(w, r, x) {
		return
	}
	switch r.Method {
	case http.MethodPost:
		g.servePost(w, r, x)
	case http.MethodGet, http.MethodDelete:
		ev.Method = r.Method
		if !g.bindSession(w, r, x) {
			return
		}
		if r.Method == http.MethodGet {
			if x.sess == nil && len(r.Header.Values(mcpwire.HeaderLastEventID)) > 0 {
				// Without a session the upstream cannot tell whose
				// stream an event id names, and a replay could carry
				// another identity's answers.
				g.deny(w, r, x, http.StatusBadRequest, nil, CodeRejected, reason.BadHTTPRequest)
				return
			}
			g.openStream(x, listAll, nil)
		}
		ev.Decision, ev.Reason = audit.Allow, reason.Allowed
		g.forward(w, r, x)
		if r.Method == http.MethodDelete && x.sess != nil && x.outcome != audit.OutcomeUpstreamError {
			if g.sessions.remove(x.sess) {
				x.sess.cut()
				g.up.sessionDeleted(x.sess)
			}
		}
	default:
		ev.Method = r.Method
		w.Header().Set("Allow", "GET, POST, DELETE")
		g.deny(w, r, x, http.StatusMethodNotAllowed, nil, CodeRejected, reason.BadHTTPRequest)
	}
	if x.recorded {
		return
	}
	// An allowed request that never got a response head (the client left,
	// the upstream failed before answering) is recorded now.
	ev.LatencyUS = g.now().Sub(start).Microseconds()
	ev.Outcome = x.outcome
	g.record(r.Context(), ev)
}

// forward hands an allowed request to the upstream through a writer that
// records its audit event the moment the response starts: no client sees
// an answer whose event is not already in the recorder (for a gateway, the
// spool file, where killing the process cannot lose it). The event's latency
// is the time to the response head, its outcome the one known then.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, x *exchange) {
	r, end := g.traceUpstream(r, x)
	defer end()
	r, cw, done := g.cuttable(w, r, x)
	defer done()
	aw := &auditWriter{ResponseWriter: cw, g: g, r: r, x: x}
	if x.stream != nil {
		g.cfg.Metrics.AddStreams(1)
		defer g.cfg.Metrics.AddStreams(-1)
	}
	x.upstreamStart = g.metricsNow()
	g.up.forward(aw, r, x)
	g.answerCut(cw, aw, r, x)
}

// auditWriter is the http.ResponseWriter of a forwarded request; see
// Gateway.forward. If the event cannot be recorded, the client gets a 503
// instead of the upstream's answer (fail closed) and the rest of the
// response is discarded.
type auditWriter struct {
	http.ResponseWriter
	g         *Gateway
	r         *http.Request
	x         *exchange
	committed bool
	blocked   bool
}

// commit records the event once, before the first byte of the response.
func (a *auditWriter) commit(status int) {
	if a.committed {
		return
	}
	a.committed = true
	x := a.x
	now := a.g.now()
	x.ev.LatencyUS = now.Sub(x.start).Microseconds()
	if m := a.g.cfg.Metrics; m != nil {
		m.Upstream(now.Sub(x.upstreamStart))
		if x.streamed = isEventStream(a.ResponseWriter.Header()); x.streamed {
			m.FirstByte(now.Sub(x.start))
		}
	}
	x.ev.Outcome = x.outcome
	if x.ev.Outcome == "" {
		x.ev.Outcome = audit.OutcomeOfStatus(status)
	}
	if err := a.g.recordErr(a.r.Context(), x.ev); err != nil {
		a.blocked = true
		var id json.RawMessage
		if x.msg != nil {
			id = x.msg.ID
		}
		a.ResponseWriter.Header().Del("Content-Length")
		writeRefusal(a.ResponseWriter, http.StatusServiceUnavailable, id, CodeRejected, reason.AuditFailed, x.ev.ID)
	}
	x.recorded = true
}

func (a *auditWriter) WriteHeader(status int) {
	if status < 200 {
		a.ResponseWriter.WriteHeader(status)
		return
	}
	a.commit(status)
	if !a.blocked {
		a.ResponseWriter.WriteHeader(status)
	}
}

func (a *auditWriter) Write(b []byte) (int, error) {
	a.commit(http.StatusOK)
	if a.blocked {
		return 0, errAuditBlocked
	}
	return a.ResponseWriter.Write(b)
}

// FlushError flushes through to the client (http.ResponseController uses
// it); a flush is the start of the response like a write.
func (a *auditWriter) FlushError() error {
	a.commit(http.StatusOK)
	if a.blocked {
		return errAuditBlocked
	}
	return http.NewResponseController(a.ResponseWriter).Flush()
}

// Flush is http.Flusher, for code that asserts it.
func (a *auditWriter) Flush() { a.FlushError() }

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (a *auditWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// servePost reads, decodes and decides one POSTed message, then forwards
// it or answers the denial.
func (g *Gateway) servePost(w http.ResponseWriter, r *http.Request, x *exchange) {
	ev := x.ev
	if !g.readBody(w, r, x) {
		return
	}
	msgs, batch, err := mcpwire.Decode(x.body, g.cfg.Limits)
	if err != nil {
		g.deny(w, r, x, http.StatusBadRequest, nil, CodeRejected, reason.Malformed)
		return
	}
	if batch || len(msgs) != 1 {
		g.deny(w, r, x, http.StatusBadRequest, nil, mcpwire.CodeInvalidRequest, reason.BatchRejected)
		return
	}
	m := &msgs[0]
	x.msg = m
	ev.Method = m.Method
	if m.Kind == mcpwire.KindResponse {
		ev.Method = "response"
	}
	g.traceMessage(r, x, m)
	why := headerCheck(r.Header, m)
	if why == "" {
		why = g.paramCheck(r.Header, m)
	}
	if why != "" {
		code := CodeRejected
		if why == reason.HeaderMismatch {
			code = CodeHeaderMismatch
		}
		g.deny(w, r, x, http.StatusBadRequest, m.ID, code, why)
		return
	}
	if !g.bindSession(w, r, x) {
		return
	}
	if g.holdAnswer(w, r, x, m) {
		return
	}
	decided := g.metricsNow()
	v := g.checkPin(x, m, g.decide(x.peer, m))
	g.cfg.Metrics.Decision(g.metricsNow().Sub(decided))
	x.v = v
	ev.Tool, ev.Resource, ev.Prompt, ev.ArgsSHA256 = v.tool, v.resource, v.prompt, v.argsHash
	ev.Rule, ev.PolicyVersion, ev.Basis, ev.Shadow = v.rule(), v.version, v.basis, v.shadow
	g.traceDecided(r, x, v)
	// A retry of a call the gateway answered input_required takes over its
	// parked hold (holdinput.go), whatever the policy now says of it.
	resumed, ok := g.resumeHold(w, r, x)
	if !ok {
		return
	}
	if !v.allow {
		if resumed != nil {
			g.unpark(resumed, "cancelled")
		}
		status := http.StatusOK
		if m.Kind != mcpwire.KindRequest {
			status = http.StatusForbidden
		}
		g.deny(w, r, x, status, m.ID, v.code, v.reason)
		return
	}
	ev.Decision, ev.Reason = audit.Allow, v.reason
	if m.Kind == mcpwire.KindNotification && m.Method == "notifications/cancelled" {
		g.cancelHeld(x, m)
	}
	switch {
	case v.approval != "":
		hw, done, ok := g.hold(w, r, x, resumed)
		defer done()
		if !ok {
			return
		}
		w = hw
	case resumed != nil:
		// The policy in force needs no approval for the call any more.
		g.unpark(resumed, "cancelled")
		ev.Detail = "approval " + resumed.a.ID + " withdrawn: the policy in force needs none"
	}
	if m.Method == "subscriptions/listen" && m.Kind == mcpwire.KindRequest {
		f, _ := m.Listen() // decide has refused what it cannot read
		var mask listKind
		if f.ToolsListChanged {
			mask |= listTools
		}
		if f.PromptsListChanged {
			mask |= listPrompts
		}
		if f.ResourcesListChanged {
			mask |= listResources | listTemplates
		}
		g.openStream(x, mask, m.ID)
	}
	if !g.reserveSession(w, r, x) {
		return
	}
	g.forward(w, r, x)
}

// openStream makes x a server-to-client stream (a GET stream, or a
// subscriptions/listen stream with its request id) that the gateway may
// inject list_changed notifications into and filters replayed lists on.
// A stream always belongs to a session: without a session id it belongs to
// the caller's stateless pseudo session, held busy while the stream is
// open. (A GET without a session id once reached the stream code with no
// session and panicked on it.)
func (g *Gateway) openStream(x *exchange, mask listKind, subID json.RawMessage) {
	x.stream = newStream(mask, subID)
	x.streamSess = x.sess
	if x.streamSess == nil {
		x.streamSess = g.sessions.statelessFor(g.base, x.peer.ref, g.now())
		x.streamSess.enter()
		x.entered = x.streamSess
	}
}

// bindSession checks the Mcp-Session-Id of r against its owner. It answers
// the refusal itself and returns false when the request must stop.
func (g *Gateway) bindSession(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	vals := r.Header.Values(mcpwire.HeaderSessionID)
	if len(vals) == 0 {
		return true
	}
	var id json.RawMessage
	if x.msg != nil {
		id = x.msg.ID
	}
	if len(vals) > 1 || vals[0] == "" {
		g.deny(w, r, x, http.StatusBadRequest, id, CodeRejected, reason.BadHTTPRequest)
		return false
	}
	x.ev.Session = vals[0]
	s := g.sessions.get(vals[0])
	if s == nil {
		g.deny(w, r, x, http.StatusNotFound, id, CodeRejected, reason.UnknownSession)
		return false
	}
	if s.owner != x.peer.ref.id || s.incarnation != x.peer.ref.incarnation || s.key != x.peer.ref.key || s.delegation != x.peer.ref.delegation {
		// Same answer as an unknown id, so that ids cannot be probed.
		g.log.Warn("session presented by another identity", "session", s.id, "owner", s.owner.String(), "peer", x.peer.ref.id.String())
		g.deny(w, r, x, http.StatusNotFound, id, CodeRejected, reason.SessionOwnerMismatch)
		return false
	}
	x.sess = s
	s.enter()
	x.entered = s
	return true
}

// deny records the denial, then answers it. The event is recorded first, so
// the event id the client sees exists.
func (g *Gateway) deny(w http.ResponseWriter, r *http.Request, x *exchange, status int, id json.RawMessage, code int, why reason.Code) {
	ev := x.ev
	ev.Decision, ev.Reason, ev.Outcome = audit.Deny, why, audit.OutcomeDenied
	switch code {
	case CodeDenied:
	case CodeLimited:
		ev.Outcome = audit.OutcomeRefused
	default:
		ev.Outcome = audit.OutcomeRejected
	}
	g.record(r.Context(), ev)
	x.recorded = true
	writeRefusal(w, status, id, code, why, ev.ID)
	x.outcome = ev.Outcome
}

// refuse answers a request whose peer is not admitted, and audits it as a
// connection refusal (aggregated when Config.Refusals is set); the answer
// carries the id of the event that accounts for it.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, src, user string, why reason.Code) {
	st := g.state.Load()
	ev := &audit.Event{
		Kind: audit.KindConnection, Src: src, SrcAddr: r.RemoteAddr,
		Dst: st.Dst(), Decision: audit.Deny, Reason: why, PolicyVersion: st.PolicyVersion(),
		Outcome: audit.OutcomeRefused, User: user,
	}
	id, err := admission.RecordRefusal(r.Context(), g.cfg.Refusals, g.cfg.Audit, ev, g.now())
	if err != nil {
		g.log.Error("audit record failed", "event_id", id, "kind", string(ev.Kind), "err", err)
	}
	g.log.Info("refused peer", "peer", src, "addr", r.RemoteAddr, "reason", why, "event_id", id)
	budget.SkipBody(w, r)
	writeRefusal(w, http.StatusForbidden, nil, CodeDenied, why, id)
}

// writeRefusal writes a JSON-RPC error response carrying reason and the
// audit event id. Its message names the class of the code and the reason;
// it never carries the cause of an upstream failure (an address, a
// command line), which is the operator's business and is in the log under
// the event id.
func writeRefusal(w http.ResponseWriter, status int, id json.RawMessage, code int, why reason.Code, eventID string) {
	data, _ := json.Marshal(struct {
		Reason  reason.Code `json:"reason"`
		EventID string      `json:"event_id"`
	}{why, eventID})
	msg := refusalMessage(code) + ": " + string(why)
	if m, ok := notAdmitted[why]; ok {
		msg = "not admitted (" + string(why) + "): " + m
	}
	if code == CodeUpstream {
		msg = "upstream unavailable: the MCP server behind this gateway could not be started or reached, or failed (" +
			string(why) + "); its operator finds the cause in the gateway's log under event " + eventID
	}
	b := mcpwire.ErrorResponse(id, mcpwire.Error{Code: code, Message: msg, Data: data})
	h := w.Header()
	h.Set("Content-Type", mcpwire.ContentTypeJSON)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// notAdmitted says, for the reasons a peer with a valid certificate is not
// admitted (not policy decisions), what happened and what to do, in the
// message the peer's MCP client shows. It tells the peer only about its
// own standing.
var notAdmitted = map[reason.Code]string{
	reason.Revoked:          "this node has been revoked; join again with a new auth key",
	reason.StaleIncarnation: "this certificate is from an earlier registration of this node's name; use the state directory of its current join",
	reason.UnknownPeer:      "this gateway does not know the caller as an active node of the mesh; check 'agentmesh nodes list' (a node that has just joined is known within seconds)",
	reason.StaleNetmap:      "this gateway has not heard from the coordinator for too long and admits nobody; its operator should check that the coordinator is running",
}

// refusalMessage is what a JSON-RPC error of the gateway's code says
// happened, before its reason.
func refusalMessage(code int) string {
	switch code {
	case CodeDenied:
		return "denied by policy"
	case CodeRejected:
		return "request rejected"
	case CodeLimited:
		return "refused for resources, retry later"
	case CodeHeaderMismatch:
		return "header mismatch"
	case mcpwire.CodeInvalidRequest:
		return "invalid request"
	}
	return "refused"
}

// decodeHeaderValue returns the value an Mcp-Name or Mcp-Param-* header
// carries: visible ASCII, space and tab as they are, or UTF-8 wrapped as
// =?base64?...?= (MCP 2026-07-28). It reports false for a value with other
// bytes (control characters, raw non-ASCII) or a wrapping that is not
// valid base64: such a header matches no body value.
func decodeHeaderValue(v string) (string, bool) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c >= 0x7f {
			return "", false
		}
	}
	if inner, ok := strings.CutPrefix(v, "=?base64?"); ok {
		if inner, ok = strings.CutSuffix(inner, "?="); ok {
			b, err := base64.StdEncoding.DecodeString(inner)
			return string(b), err == nil
		}
	}
	return v, true
}
