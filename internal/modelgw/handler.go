package modelgw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/modelwire"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// modelRoutes are the POST paths decided on the body's "model".
var modelRoutes = map[string]bool{
	"/v1/chat/completions": true,
	"/v1/completions":      true,
	"/v1/embeddings":       true,
	"/v1/responses":        true,
}

// forwardHeaders are the client headers passed upstream: the model API's
// own allow-list, copied with the same helper as the MCP hops' lists
// (mcpwire.CopyHeaders). Everything else stays at the gateway:
// Authorization, Cookie, Api-Key and any other credential the client's SDK
// sends (the mesh identity is the client's only credential; the upstream's
// comes from Config.UpstreamHeader), proxy and hop-by-hop headers.
var forwardHeaders = []string{"Accept", "Content-Type", "User-Agent", "Openai-Beta", "Idempotency-Key"}

// hopHeaders of an upstream response are not relayed to the client.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// request is one request in flight: what its steps decide, and what its
// audit event needs.
type request struct {
	start time.Time
	st    *admission.State // as admitted: with the caller's own policy, if any
	src   policy.Node
	ev    audit.Event
	// decide is the request as the policy decides it.
	decide policy.Request
	// filterList is set for GET /v1/models: the answer is filtered to
	// what the caller may use.
	filterList bool
	// streamNoUsage is set for a streamed completion that does not ask
	// for usage, whose tokens could not be counted.
	streamNoUsage bool
	limits        []policy.Limit
	// del is the delegation the caller presented (delegation.go), nil
	// for none.
	del *admission.Delegated
}

// ErrorBody is the JSON body of every refusal (modelwire.ErrorBody, which
// the local endpoint writes too).
type ErrorBody = modelwire.ErrorBody

// ErrorDetail is the "error" object of ErrorBody.
type ErrorDetail = modelwire.ErrorDetail

// refusal is how a step refuses a request: the HTTP status, the reason
// code, the outcome the audit event records and the message the client
// reads.
type refusal struct {
	status  int
	why     reason.Code
	outcome audit.Outcome
	msg     string
}

// serveHTTP serves one request as a sequence of steps, each of which
// either lets the request go on or answers (and audits) its refusal: admit
// the caller, take its slot among requests in flight, check the path, read
// the body, read what the request asks for, decide it with the policy,
// enforce the limits, and forward it.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.now()
	// Tracked before the state is loaded: an Update either happened
	// before the load, or sees this request and re-checks it.
	r, done := g.track(r)
	defer done()
	x := &request{start: start, st: g.state.Load()}
	x.ev = audit.Event{
		Kind: audit.KindRequest, SrcAddr: r.RemoteAddr, Dst: x.st.Dst(),
		Method: r.Method + " " + r.URL.Path, PolicyVersion: x.st.PolicyVersion(),
	}
	if !g.admit(w, r, x) {
		return
	}
	r, endTrace := g.traceServer(r, x)
	defer endTrace()
	inFlight, ok := g.takeSlot(w, r, x)
	if !ok {
		return
	}
	defer inFlight.Release()
	if !g.checkPath(w, r, x) {
		return
	}
	var body []byte
	if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		b, lease, ok := g.readBody(w, r, x)
		if !ok {
			return
		}
		defer lease.Release()
		body = b
	}
	if !g.classify(w, r, x, body) || !g.decidePolicy(w, r, x) || !g.enforceLimits(w, r, x) {
		return
	}
	x.ev.Decision, x.ev.Reason = audit.Allow, reason.Allowed
	g.forward(w, r, x, body)
}

// admit identifies the caller and admits it under the current state
// (package admission). A caller that is not admitted is audited as a
// refused connection, aggregated per source, as the MCP gateway does.
func (g *Gateway) admit(w http.ResponseWriter, r *http.Request, x *request) bool {
	peer, why := admission.Identify(x.st, r, g.cfg.Identifier)
	x.ev.Src, x.ev.User = peer.Src, peer.User
	if why != "" {
		x.ev.Kind, x.ev.Method = audit.KindConnection, ""
		budget.SkipBody(w, r)
		g.refuse(w, r, x, refusal{http.StatusForbidden, why, audit.OutcomeRefused, "caller not admitted: " + string(why)})
		return false
	}
	x.src, x.st = peer.Node, peer.State
	x.ev.PolicyVersion = x.st.PolicyVersion()
	return g.admitDelegation(w, r, x, peer)
}

// takeSlot counts the request among its caller's requests in flight,
// streams included, until the returned lease is released; over the cap it
// is refused at once.
func (g *Gateway) takeSlot(w http.ResponseWriter, r *http.Request, x *request) (*budget.Lease, bool) {
	l, err := g.requests.Take(x.ev.Src, 1)
	if err != nil {
		g.log.Info("model gateway: request refused", "peer", x.ev.Src, "err", err)
		budget.SkipBody(w, r)
		g.refuse(w, r, x, refusal{http.StatusTooManyRequests, reason.TooManyRequests, audit.OutcomeRefused,
			"too many requests in flight from this caller; retry later"})
		return nil, false
	}
	return l, true
}

// checkPath refuses a URL path that is not canonical: a grant's path glob
// and the upstream's router must see the same path.
func (g *Gateway) checkPath(w http.ResponseWriter, r *http.Request, x *request) bool {
	p := r.URL.Path
	if r.URL.RawPath != "" || p == "" || path.Clean(p) != p || strings.Contains(p, "//") {
		budget.SkipBody(w, r)
		g.refuse(w, r, x, refusal{http.StatusBadRequest, reason.BadPath, audit.OutcomeRejected, "the URL path is not clean"})
		return false
	}
	return true
}

// readBody reads the request body within the body budget; the lease holds
// its bytes until released. It answers a refusal itself and reports false
// when the request must stop.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, x *request) ([]byte, *budget.Lease, bool) {
	b, lease, err := g.bodies.Read(w, r, x.ev.Src)
	switch {
	case err == nil:
		return b, lease, true
	case errors.Is(err, budget.ErrTooLarge):
		g.refuse(w, r, x, refusal{http.StatusRequestEntityTooLarge, reason.TooLarge, audit.OutcomeRejected, "request body too large"})
	case errors.Is(err, budget.ErrPeerShare), errors.Is(err, budget.ErrExhausted):
		g.log.Info("model gateway: request body over budget", "peer", x.ev.Src, "err", err)
		status, msg := http.StatusTooManyRequests, "too many request bodies in flight from this caller; retry later"
		if errors.Is(err, budget.ErrExhausted) {
			status, msg = http.StatusServiceUnavailable, "the gateway holds too many request bodies; retry later"
		}
		w.Header().Set("Retry-After", "1")
		g.refuse(w, r, x, refusal{status, reason.OverBudget, audit.OutcomeRefused, msg})
	case errors.Is(err, budget.ErrTimeout):
		g.refuse(w, r, x, refusal{http.StatusRequestTimeout, reason.BodyTimeout, audit.OutcomeRefused, "the request body did not arrive in time"})
	default:
		// The client went away or broke the body, as the MCP gateway
		// records it; the answer most likely reaches nobody.
		g.refuse(w, r, x, refusal{http.StatusBadRequest, reason.IncompleteBody, audit.OutcomeClientGone, "could not read the request body"})
	}
	return nil, nil, false
}

// classify reads what the request asks for into x.decide: a model (from
// the body of a model route, or the path of GET /v1/models/ID), the model
// list, or a path.
func (g *Gateway) classify(w http.ResponseWriter, r *http.Request, x *request, body []byte) bool {
	p := r.URL.Path
	x.decide = policy.Request{Src: x.src, Dst: x.st.Self, Method: p, HTTPMethod: r.Method, Path: p}
	if x.del != nil {
		x.decide.Delegation = x.del.Policy
	}
	switch {
	case r.Method == http.MethodPost && modelRoutes[p]:
		model, fields, err := decodeModelBody(body)
		if err != nil {
			g.refuse(w, r, x, refusal{http.StatusBadRequest, reason.Malformed, audit.OutcomeRejected, err.Error()})
			return false
		}
		x.decide.Action, x.decide.Model, x.decide.Args = policy.ActionModel, model, fields
		x.streamNoUsage = wantsStreamWithoutUsage(p, fields)
	case r.Method == http.MethodGet && p == "/v1/models":
		// Admission has established a grant links the caller here; the
		// list is filtered to what the caller may use.
		x.decide.Action, x.filterList = policy.ActionConnect, true
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/v1/models/"):
		x.decide.Action, x.decide.Model = policy.ActionModel, strings.TrimPrefix(p, "/v1/models/")
	default:
		x.decide.Action = policy.ActionPath
	}
	x.ev.Model = x.decide.Model
	return true
}

// decidePolicy decides the request with the policy. The rule is the grant
// index, as the MCP gateway writes it.
func (g *Gateway) decidePolicy(w http.ResponseWriter, r *http.Request, x *request) bool {
	decided := g.now()
	d := x.st.Policy.Decide(x.decide)
	g.cfg.Metrics.Decision(g.now().Sub(decided))
	// Shadow mode: the shadow policy is asked the same, never enforced.
	x.ev.Shadow = x.st.ShadowOf(d, func(p *policy.Policy) policy.Decision { return p.Decide(x.decide) })
	x.ev.PolicyVersion = d.Version
	if !x.filterList {
		x.ev.Basis = admission.Basis(&x.decide, x.ev.Method, x.st.Policy)
	}
	if d.Grant >= 0 {
		x.ev.Rule = strconv.Itoa(d.Grant)
	}
	if !d.Allow {
		f := refusal{http.StatusForbidden, d.Reason, audit.OutcomeDenied, denyMessage(&x.decide, d.Reason)}
		if d.Reason == reason.CaseVariantKey {
			// Ambiguous input, not a policy verdict.
			f.status, f.outcome = http.StatusBadRequest, audit.OutcomeRejected
		}
		g.refuse(w, r, x, f)
		return false
	}
	if x.filterList {
		x.ev.Rule = ""
	}
	if why := g.checkDelegated(x); why != "" {
		g.refuse(w, r, x, refusal{http.StatusForbidden, why, audit.OutcomeDenied, "request not allowed for the person this caller acts for (" + string(why) + ")"})
		return false
	}
	return true
}

// enforceLimits applies the policy's limits to an allowed request and
// counts it against them; a refusal names the limit ("limits[N]") as its
// rule.
func (g *Gateway) enforceLimits(w http.ResponseWriter, r *http.Request, x *request) bool {
	x.limits = x.st.Policy.Limits(x.src, x.st.Self, x.decide.Model)
	if x.streamNoUsage {
		// Fail closed: a stream that never reports usage would spend
		// tokens no limit counts.
		for _, l := range x.limits {
			if l.TokensPerDay > 0 {
				x.ev.Rule = "limits[" + strconv.Itoa(l.Index) + "]"
				g.refuse(w, r, x, refusal{http.StatusForbidden, reason.UsageRequired, audit.OutcomeDenied,
					"a tokens_per_day limit applies: set stream_options.include_usage to true when streaming"})
				return false
			}
		}
	}
	v, err := g.counters.admit(x.ev.Src, x.limits, g.now())
	if err != nil {
		g.log.Error("model gateway: saving limit counters failed", "err", err)
		g.refuse(w, r, x, refusal{http.StatusServiceUnavailable, reason.LimitsUnavailable, audit.OutcomeUnavailable, "limit counters unavailable"})
		return false
	}
	if v != nil {
		x.ev.Rule = "limits[" + strconv.Itoa(v.limit.Index) + "]"
		secs := int64((v.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		msg := "rate limit reached: " + strconv.FormatInt(v.limit.RPM, 10) + " requests per minute"
		if v.reason == reason.LimitTokens {
			msg = "token limit reached: " + strconv.FormatInt(v.limit.TokensPerDay, 10) + " tokens per day (UTC)"
		}
		g.refuse(w, r, x, refusal{http.StatusTooManyRequests, v.reason, audit.OutcomeDenied, msg})
		return false
	}
	return true
}

func denyMessage(r *policy.Request, why reason.Code) string {
	switch {
	case why == reason.CaseVariantKey:
		return "a body field differs only in case from a field the policy reads; spell it exactly (" + string(why) + ")"
	case r.Action == policy.ActionModel:
		return "model " + strconv.Quote(r.Model) + " is not allowed for this caller (" + string(why) + ")"
	case r.Action == policy.ActionPath:
		return r.HTTPMethod + " " + r.Path + " is not allowed for this caller (" + string(why) + ")"
	}
	return "request not allowed (" + string(why) + ")"
}

// refuse records a refusal, then answers it in the OpenAI error shape
// with the id of the event that recorded it. A request the policy allowed
// that failed upstream stays allowed in the audit trail, with its reason;
// its outcome says what went wrong.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, x *request, f refusal) {
	if x.ev.Decision != audit.Allow {
		x.ev.Decision, x.ev.Reason = audit.Deny, f.why
	}
	x.ev.Status, x.ev.Outcome = f.status, f.outcome
	x.ev.LatencyUS = g.now().Sub(x.start).Microseconds()
	var id string
	if x.ev.Kind == audit.KindConnection {
		// A caller that was not admitted: aggregated per source, so a
		// flood of them writes counts, not one event each.
		var err error
		if id, err = admission.RecordRefusal(r.Context(), g.cfg.Refusals, g.cfg.Audit, &x.ev, g.now()); err != nil {
			g.log.Error("model gateway: audit record failed", "err", err, "event", id, "reason", x.ev.Reason)
		}
	} else {
		id = g.record(r.Context(), &x.ev)
	}
	typ := "permission_denied"
	switch f.status {
	case http.StatusTooManyRequests:
		typ = "rate_limit_exceeded"
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusRequestTimeout:
		typ = "invalid_request_error"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		typ = "api_error"
	}
	writeError(w, f.status, ErrorBody{Error: ErrorDetail{Type: typ, Code: f.why, Message: f.msg, AuditEvent: id}, Reason: f.why, AuditEvent: id})
}

func writeError(w http.ResponseWriter, status int, body ErrorBody) {
	modelwire.WriteError(w, status, body)
}

// record records e (admission.Record stamps it). It returns the id, or ""
// when recording failed (which is logged).
func (g *Gateway) record(ctx context.Context, e *audit.Event) string {
	if err := g.recordErr(ctx, e); err != nil {
		return ""
	}
	return e.ID
}

func (g *Gateway) recordErr(ctx context.Context, e *audit.Event) error {
	if err := admission.Record(ctx, g.cfg.Audit, e, g.now()); err != nil {
		g.log.Error("model gateway: audit record failed", "err", err, "event", e.ID, "reason", e.Reason)
		return err
	}
	return nil
}

// forward sends an allowed request upstream and relays the answer.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, x *request, body []byte) {
	u := *g.upstream
	u.Path = g.upstream.Path + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	ctx := r.Context()
	if g.tr.On() {
		var span trace.Span
		ctx, span = g.traceUpstream(ctx)
		defer span.End()
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, u.String(), rd)
	if err != nil {
		g.upstreamFailed(w, r, x, err)
		return
	}
	mcpwire.CopyHeaders(out.Header, r.Header, forwardHeaders...)
	for k, vs := range g.cfg.UpstreamHeader {
		out.Header[http.CanonicalHeaderKey(k)] = vs
	}
	if g.tr.On() {
		tracing.Inject(ctx, out.Header)
	}
	sent := g.now()
	resp, err := g.client.Do(out)
	if err != nil {
		g.upstreamFailed(w, r, x, err)
		return
	}
	defer resp.Body.Close()
	g.cfg.Metrics.Upstream(g.now().Sub(sent))
	// For a buffered answer the first byte is the response head; a stream
	// overwrites this with the time of its first chunk.
	x.ev.TTFBUS = g.now().Sub(x.start).Microseconds()
	stream := strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), mcpwire.ContentTypeSSE)
	if !stream {
		g.relayBuffered(w, r, x, resp)
		return
	}
	g.relayStream(w, r, x, resp)
}

// upstreamFailed answers a request the upstream did not answer: the
// upstream failed, or the request ended before it answered (the client
// went away, or the gateway cut it), as the MCP gateway records it.
func (g *Gateway) upstreamFailed(w http.ResponseWriter, r *http.Request, x *request, err error) {
	outcome := audit.OutcomeUpstreamError
	if r.Context().Err() != nil {
		outcome = audit.OutcomeClientGone
	} else {
		g.log.Warn("model gateway: upstream request failed", "err", err)
	}
	g.refuse(w, r, x, refusal{http.StatusBadGateway, reason.UpstreamError, outcome, "the model upstream could not be reached"})
}

func copyHeader(w http.ResponseWriter, resp *http.Response) {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.Del("Content-Length")
	h.Del("Set-Cookie")
}

// relayBuffered reads a non-streamed answer (bounded), filters a model list,
// reads its usage, records the event and only then answers.
func (g *Gateway) relayBuffered(w http.ResponseWriter, r *http.Request, x *request, resp *http.Response) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponseBytes+1))
	if err != nil {
		g.upstreamFailed(w, r, x, err)
		return
	}
	if int64(len(b)) > g.cfg.MaxResponseBytes {
		if x.filterList {
			g.refuse(w, r, x, refusal{http.StatusBadGateway, reason.UpstreamError, audit.OutcomeUpstreamError, "the model list is too large to filter"})
			return
		}
		// Too big to parse: relay it unparsed.
		g.relayLarge(w, r, x, resp, b)
		return
	}
	if x.filterList && resp.StatusCode == http.StatusOK {
		fb, ok := filterModels(b, g.visibility(x))
		if !ok {
			g.refuse(w, r, x, refusal{http.StatusBadGateway, reason.UpstreamError, audit.OutcomeUpstreamError, "the upstream's model list is malformed"})
			return
		}
		b = fb
	}
	if resp.StatusCode < 300 {
		if u := usageOf(b); u != nil {
			x.ev.Usage = u.toAudit()
		}
	}
	x.ev.Status = resp.StatusCode
	x.ev.Outcome = audit.OutcomeOfStatus(resp.StatusCode)
	total := g.now().Sub(x.start)
	x.ev.LatencyUS = total.Microseconds()
	g.cfg.Metrics.Total(total)
	if err := g.recordErr(r.Context(), &x.ev); err != nil {
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: ErrorDetail{Type: "api_error", Code: reason.AuditFailed, Message: "the request could not be audited"}, Reason: reason.AuditFailed})
		return
	}
	g.countTokens(x)
	copyHeader(w, resp)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// relayLarge relays a response too large to buffer; prefix has been read.
// Servers put usage last: it is looked for in the tail, so that a huge
// answer (a large embeddings batch) is still counted.
func (g *Gateway) relayLarge(w http.ResponseWriter, r *http.Request, x *request, resp *http.Response, prefix []byte) {
	copyHeader(w, resp)
	w.WriteHeader(resp.StatusCode)
	tail := &tailWriter{max: maxUsageTail}
	tail.Write(prefix)
	end := audit.OutcomeClientGone
	if _, err := w.Write(prefix); err == nil {
		end = relay(r, w, resp.Body, false, func(b []byte) { tail.Write(b) })
	}
	g.finishStream(r, x, resp.StatusCode, usageInTail(tail.b), end)
}

// relayStream passes an SSE answer through chunk by chunk, flushing after
// every read, and watches it for usage.
func (g *Gateway) relayStream(w http.ResponseWriter, r *http.Request, x *request, resp *http.Response) {
	copyHeader(w, resp)
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(resp.StatusCode)
	http.NewResponseController(w).Flush()
	var su sseUsage
	var tail eventTail
	first := true
	end := relay(r, w, resp.Body, true, func(b []byte) {
		if first {
			// Time to first byte of a stream: when its first chunk (not
			// merely its head) is passed on.
			ttfb := g.now().Sub(x.start)
			x.ev.TTFBUS, first = ttfb.Microseconds(), false
			g.cfg.Metrics.FirstByte(ttfb)
		}
		su.Write(b)
		tail.note(b)
	})
	if end == audit.OutcomeStreamCut {
		g.tellCut(w, r, x, tail.atBoundary())
	}
	g.finishStream(r, x, resp.StatusCode, su.last, end)
}

// relay passes body on to w as it arrives, handing each chunk to seen
// before it is written (and flushing after it when flush is set). It
// returns how the answer ended, as its event's outcome: "" when the
// upstream finished it, client_gone when writing to the client failed,
// stream_cut when the request ended meanwhile (the gateway cut it, or the
// client's connection closed), upstream_error when reading the upstream
// failed.
func relay(r *http.Request, w http.ResponseWriter, body io.Reader, flush bool, seen func([]byte)) audit.Outcome {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			seen(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return audit.OutcomeClientGone
			}
			if flush {
				if ferr := rc.Flush(); ferr != nil {
					return audit.OutcomeClientGone
				}
			}
		}
		switch {
		case err == io.EOF:
			return ""
		case err != nil && r.Context().Err() != nil:
			return audit.OutcomeStreamCut
		case err != nil:
			return audit.OutcomeUpstreamError
		}
	}
}

// finishStream records the event of a relayed answer once it has ended:
// end is how it ended early, "" when it did not.
func (g *Gateway) finishStream(r *http.Request, x *request, status int, u *usageJSON, end audit.Outcome) {
	x.ev.Status = status
	x.ev.Outcome = audit.OutcomeOfStatus(status)
	if end != "" {
		x.ev.Outcome = end
	}
	if u != nil && status < 300 {
		x.ev.Usage = u.toAudit()
	}
	x.ev.LatencyUS = g.now().Sub(x.start).Microseconds()
	g.record(r.Context(), &x.ev)
	g.countTokens(x)
}

func (g *Gateway) countTokens(x *request) {
	if x.ev.Usage == nil {
		return
	}
	if err := g.counters.addTokens(x.ev.Src, x.limits, x.ev.Usage.TotalTokens, g.now()); err != nil {
		g.log.Error("model gateway: saving token counters failed", "err", err)
	}
}

// filterModels keeps the entries of an OpenAI model list ({"object":"list",
// "data":[{"id":...},...]}) whose id is visible; other fields are kept.
func filterModels(b []byte, v policy.Visibility) ([]byte, bool) {
	var doc map[string]json.RawMessage
	if json.Unmarshal(b, &doc) != nil {
		return nil, false
	}
	var data []json.RawMessage
	if json.Unmarshal(doc["data"], &data) != nil {
		return nil, false
	}
	kept := make([]json.RawMessage, 0, len(data))
	for _, m := range data {
		var entry struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(m, &entry) != nil {
			return nil, false
		}
		if v.Model(entry.ID) {
			kept = append(kept, m)
		}
	}
	nb, err := json.Marshal(kept)
	if err != nil {
		return nil, false
	}
	doc["data"] = nb
	out, err := json.Marshal(doc)
	return out, err == nil
}
