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

	"agentmesh/internal/audit"
	"agentmesh/internal/budget"
	"agentmesh/internal/gateway"
	"agentmesh/internal/modelwire"
	"agentmesh/internal/policy"
)

// modelRoutes are the POST paths decided on the body's "model".
var modelRoutes = map[string]bool{
	"/v1/chat/completions": true,
	"/v1/completions":      true,
	"/v1/embeddings":       true,
	"/v1/responses":        true,
}

// forwardHeaders are the client headers passed upstream. Everything else
// stays at the gateway: Authorization, Cookie, Api-Key and any other
// credential the client's SDK sends (the mesh identity is the client's only
// credential; the upstream's comes from Config.UpstreamHeader), proxy and
// hop-by-hop headers.
var forwardHeaders = []string{"Accept", "Content-Type", "User-Agent", "Openai-Beta", "Idempotency-Key"}

// hopHeaders of an upstream response are not relayed to the client.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// request is one request in flight: what the audit event needs.
type request struct {
	start  time.Time
	st     *gateway.State // as admitted: with the caller's own policy, if any
	src    policy.Node
	ev     audit.Event
	limits []policy.Limit
}

// ErrorBody is the JSON body of every refusal (modelwire.ErrorBody, which
// the local endpoint writes too).
type ErrorBody = modelwire.ErrorBody

// ErrorDetail is the "error" object of ErrorBody.
type ErrorDetail = modelwire.ErrorDetail

func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.now()
	// Tracked before the state is loaded: an Update either happened
	// before the load, or sees this request and re-checks it.
	r, done := g.track(r)
	defer done()
	x := &request{start: start, st: g.state.Load()}
	x.ev = audit.Event{
		Kind: audit.KindRequest, SrcAddr: r.RemoteAddr, Dst: dstOf(x.st),
		Method: r.Method + " " + r.URL.Path, PolicyVersion: x.st.Policy.Version(),
	}
	peer, reason := gateway.IdentifyRequest(x.st, r, g.cfg.Identifier)
	x.ev.Src = peer.Src
	if reason != "" {
		// Audited as a refused connection, as the MCP gateway does.
		x.ev.Kind, x.ev.Method, x.ev.Outcome = audit.KindConnection, "", "refused"
		budget.SkipBody(w, r)
		g.refuse(w, r, x, http.StatusForbidden, reason, "caller not admitted: "+reason)
		return
	}
	x.src, x.st = peer.Node, peer.State
	x.ev.PolicyVersion = x.st.Policy.Version()
	inFlight, err := g.requests.Take(x.ev.Src, 1)
	if err != nil {
		g.log.Info("model gateway: request refused", "peer", x.ev.Src, "err", err)
		budget.SkipBody(w, r)
		x.ev.Outcome = "refused"
		g.refuse(w, r, x, http.StatusTooManyRequests, ReasonTooManyRequests, "too many requests in flight from this caller; retry later")
		return
	}
	defer inFlight.Release()
	p := r.URL.Path
	if r.URL.RawPath != "" || p == "" || path.Clean(p) != p || strings.Contains(p, "//") {
		budget.SkipBody(w, r)
		g.refuse(w, r, x, http.StatusBadRequest, ReasonBadPath, "the URL path is not clean")
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
	req := policy.Request{Src: x.src, Dst: x.st.Self, Method: p, HTTPMethod: r.Method, Path: p}
	filterList, streamNoUsage := false, false
	switch {
	case r.Method == http.MethodPost && modelRoutes[p]:
		model, fields, err := decodeModelBody(body)
		if err != nil {
			g.refuse(w, r, x, http.StatusBadRequest, ReasonMalformed, err.Error())
			return
		}
		req.Action, req.Model, req.Args = policy.ActionModel, model, fields
		streamNoUsage = wantsStreamWithoutUsage(p, fields)
	case r.Method == http.MethodGet && p == "/v1/models":
		// Admission has established a grant links the caller here; the
		// list is filtered to what the caller may use.
		req.Action, filterList = policy.ActionConnect, true
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/v1/models/"):
		req.Action, req.Model = policy.ActionModel, strings.TrimPrefix(p, "/v1/models/")
	default:
		req.Action = policy.ActionPath
	}
	x.ev.Model = req.Model
	d := x.st.Policy.Decide(req)
	x.ev.PolicyVersion = d.Version
	// The rule is the grant index, as the MCP gateway writes it; a limit
	// refusal writes "limits[N]" instead.
	if d.Grant >= 0 {
		x.ev.Rule = strconv.Itoa(d.Grant)
	}
	if !d.Allow {
		status := http.StatusForbidden
		if d.Reason == policy.ReasonCaseVariantKey {
			status = http.StatusBadRequest // ambiguous input, not a policy verdict
		}
		g.refuse(w, r, x, status, string(d.Reason), denyMessage(&req, d.Reason))
		return
	}
	if filterList {
		x.ev.Rule = ""
	}
	x.limits = x.st.Policy.Limits(x.src, x.st.Self, req.Model)
	if streamNoUsage {
		// Fail closed: a stream that never reports usage would spend
		// tokens no limit counts.
		for _, l := range x.limits {
			if l.TokensPerDay > 0 {
				x.ev.Rule = "limits[" + strconv.Itoa(l.Index) + "]"
				g.refuse(w, r, x, http.StatusForbidden, ReasonUsageRequired,
					"a tokens_per_day limit applies: set stream_options.include_usage to true when streaming")
				return
			}
		}
	}
	v, err := g.counters.admit(x.ev.Src, x.limits, g.now())
	if err != nil {
		g.log.Error("model gateway: saving limit counters failed", "err", err)
		g.refuse(w, r, x, http.StatusServiceUnavailable, ReasonLimitStore, "limit counters unavailable")
		return
	}
	if v != nil {
		x.ev.Rule = "limits[" + strconv.Itoa(v.limit.Index) + "]"
		secs := int64((v.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		msg := "rate limit reached: " + strconv.FormatInt(v.limit.RPM, 10) + " requests per minute"
		if v.reason == ReasonTokenLimit {
			msg = "token limit reached: " + strconv.FormatInt(v.limit.TokensPerDay, 10) + " tokens per day (UTC)"
		}
		g.refuse(w, r, x, http.StatusTooManyRequests, v.reason, msg)
		return
	}
	x.ev.Decision, x.ev.Reason = audit.Allow, string(policy.ReasonAllowed)
	g.forward(w, r, x, body, filterList)
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
		g.refuse(w, r, x, http.StatusRequestEntityTooLarge, ReasonTooLarge, "request body too large")
	case errors.Is(err, budget.ErrPeerShare), errors.Is(err, budget.ErrExhausted):
		g.log.Info("model gateway: request body over budget", "peer", x.ev.Src, "err", err)
		status, msg := http.StatusTooManyRequests, "too many request bodies in flight from this caller; retry later"
		if errors.Is(err, budget.ErrExhausted) {
			status, msg = http.StatusServiceUnavailable, "the gateway holds too many request bodies; retry later"
		}
		w.Header().Set("Retry-After", "1")
		x.ev.Outcome = "refused"
		g.refuse(w, r, x, status, ReasonOverBudget, msg)
	case errors.Is(err, budget.ErrTimeout):
		x.ev.Outcome = "refused"
		g.refuse(w, r, x, http.StatusRequestTimeout, ReasonBodyTimeout, "the request body did not arrive in time")
	default:
		g.refuse(w, r, x, http.StatusBadRequest, ReasonMalformed, "could not read the request body")
	}
	return nil, nil, false
}

func denyMessage(r *policy.Request, reason policy.Reason) string {
	switch {
	case reason == policy.ReasonCaseVariantKey:
		return "a body field differs only in case from a field the policy reads; spell it exactly (" + string(reason) + ")"
	case r.Action == policy.ActionModel:
		return "model " + strconv.Quote(r.Model) + " is not allowed for this caller (" + string(reason) + ")"
	case r.Action == policy.ActionPath:
		return r.HTTPMethod + " " + r.Path + " is not allowed for this caller (" + string(reason) + ")"
	}
	return "request not allowed (" + string(reason) + ")"
}

// refuse records a denial and answers it.
func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, x *request, status int, reason, msg string) {
	// An allowed request that failed upstream stays allowed in the audit
	// trail; its outcome says what went wrong.
	if x.ev.Decision != audit.Allow {
		x.ev.Decision, x.ev.Reason = audit.Deny, reason
	}
	x.ev.Status = status
	if x.ev.Outcome == "" {
		switch status {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			x.ev.Outcome = "rejected"
		case http.StatusBadGateway, http.StatusServiceUnavailable:
			x.ev.Outcome = "upstream_error"
			if reason != ReasonUpstream {
				x.ev.Outcome = "unavailable"
			}
		default:
			x.ev.Outcome = "denied"
		}
	}
	x.ev.LatencyUS = g.now().Sub(x.start).Microseconds()
	var id string
	if x.ev.Kind == audit.KindConnection {
		// A caller that was not admitted: aggregated per source, so a
		// flood of them writes counts, not one event each.
		x.ev.Time = g.now().UTC()
		var err error
		if id, err = gateway.RecordRefusal(r.Context(), g.cfg.Refusals, g.cfg.Audit, &x.ev); err != nil {
			g.log.Error("model gateway: audit record failed", "err", err, "event", id, "reason", x.ev.Reason)
		}
	} else {
		id = g.record(r.Context(), &x.ev)
	}
	typ := "permission_denied"
	switch status {
	case http.StatusTooManyRequests:
		typ = "rate_limit_exceeded"
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusRequestTimeout:
		typ = "invalid_request_error"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		typ = "api_error"
	}
	writeError(w, status, ErrorBody{Error: ErrorDetail{Type: typ, Code: reason, Message: msg, AuditEvent: id}, Reason: reason, AuditEvent: id})
}

func writeError(w http.ResponseWriter, status int, body ErrorBody) {
	modelwire.WriteError(w, status, body)
}

// record fills in the event's id and time and records it. It returns the id,
// or "" when recording failed (which is logged).
func (g *Gateway) record(ctx context.Context, e *audit.Event) string {
	if err := g.recordErr(ctx, e); err != nil {
		return ""
	}
	return e.ID
}

func (g *Gateway) recordErr(ctx context.Context, e *audit.Event) error {
	e.V, e.ID, e.Time = audit.SchemaVersion, audit.NewID(), g.now().UTC()
	if err := g.cfg.Audit.Record(context.WithoutCancel(ctx), e); err != nil {
		g.log.Error("model gateway: audit record failed", "err", err, "event", e.ID, "reason", e.Reason)
		return err
	}
	return nil
}

// forward sends an allowed request upstream and relays the answer.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, x *request, body []byte, filterList bool) {
	u := *g.upstream
	u.Path = g.upstream.Path + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), rd)
	if err != nil {
		g.upstreamFailed(w, r, x, err)
		return
	}
	for _, k := range forwardHeaders {
		if vs := r.Header.Values(k); len(vs) > 0 {
			out.Header[k] = vs
		}
	}
	for k, vs := range g.cfg.UpstreamHeader {
		out.Header[http.CanonicalHeaderKey(k)] = vs
	}
	resp, err := g.client.Do(out)
	if err != nil {
		g.upstreamFailed(w, r, x, err)
		return
	}
	defer resp.Body.Close()
	// For a buffered answer the first byte is the response head; a stream
	// overwrites this with the time of its first chunk.
	x.ev.TTFBUS = g.now().Sub(x.start).Microseconds()
	stream := strings.HasPrefix(strings.ToLower(resp.Header.Get("Content-Type")), "text/event-stream")
	if !stream {
		g.relayBuffered(w, r, x, resp, filterList)
		return
	}
	g.relayStream(w, r, x, resp)
}

func (g *Gateway) upstreamFailed(w http.ResponseWriter, r *http.Request, x *request, err error) {
	g.log.Warn("model gateway: upstream request failed", "err", err)
	g.refuse(w, r, x, http.StatusBadGateway, ReasonUpstream, "the model upstream could not be reached")
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
func (g *Gateway) relayBuffered(w http.ResponseWriter, r *http.Request, x *request, resp *http.Response, filterList bool) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponseBytes+1))
	if err != nil {
		g.upstreamFailed(w, r, x, err)
		return
	}
	if int64(len(b)) > g.cfg.MaxResponseBytes {
		if filterList {
			g.refuse(w, r, x, http.StatusBadGateway, ReasonUpstream, "the model list is too large to filter")
			return
		}
		// Too big to parse: relay it unparsed.
		g.relayLarge(w, r, x, resp, b)
		return
	}
	if filterList && resp.StatusCode == http.StatusOK {
		fb, ok := filterModels(b, x.st.Policy.Visible(x.src, x.st.Self))
		if !ok {
			g.refuse(w, r, x, http.StatusBadGateway, ReasonUpstream, "the upstream's model list is malformed")
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
	x.ev.Outcome = outcome(resp.StatusCode)
	x.ev.LatencyUS = g.now().Sub(x.start).Microseconds()
	if err := g.recordErr(r.Context(), &x.ev); err != nil {
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: ErrorDetail{Type: "api_error", Code: ReasonAuditFailed, Message: "the request could not be audited"}, Reason: ReasonAuditFailed})
		return
	}
	g.countTokens(x)
	copyHeader(w, resp)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

// relayLarge relays a response too large to buffer; prefix has been read.
func (g *Gateway) relayLarge(w http.ResponseWriter, r *http.Request, x *request, resp *http.Response, prefix []byte) {
	copyHeader(w, resp)
	w.WriteHeader(resp.StatusCode)
	w.Write(prefix)
	tail := &tailWriter{max: maxUsageTail}
	tail.Write(prefix)
	_, err := io.Copy(io.MultiWriter(w, tail), resp.Body)
	// Servers put usage last: look for it in the tail, so that a huge
	// answer (a large embeddings batch) is still counted.
	g.finishStream(r, x, resp.StatusCode, usageInTail(tail.b), err)
}

// relayStream passes an SSE answer through chunk by chunk, flushing after
// every read, and watches it for usage.
func (g *Gateway) relayStream(w http.ResponseWriter, r *http.Request, x *request, resp *http.Response) {
	copyHeader(w, resp)
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	var su sseUsage
	first := true
	buf := make([]byte, 32<<10)
	var rerr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if first {
				// Time to first byte of a stream: when its first chunk
				// (not merely its head) is passed on.
				x.ev.TTFBUS, first = g.now().Sub(x.start).Microseconds(), false
			}
			su.Write(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				rerr = werr
				break
			}
			if ferr := rc.Flush(); ferr != nil {
				rerr = ferr
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	g.finishStream(r, x, resp.StatusCode, su.last, rerr)
}

// finishStream records the event of a relayed stream once it has ended.
func (g *Gateway) finishStream(r *http.Request, x *request, status int, u *usageJSON, err error) {
	x.ev.Status = status
	x.ev.Outcome = outcome(status)
	if err != nil {
		x.ev.Outcome = "stream_cut"
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

func outcome(status int) string {
	switch {
	case status < 300:
		return "ok"
	case status < 500:
		return "client_error"
	}
	return "upstream_error"
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

func dstOf(s *gateway.State) string {
	if !s.SelfID.IsZero() {
		return s.SelfID.String()
	}
	if s.Self.Name == "" {
		return ""
	}
	return string(s.Self.Kind) + ":" + string(s.Self.Name)
}
