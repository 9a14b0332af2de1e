package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// verdict is the gateway's answer to one client message.
type verdict struct {
	allow   bool
	reason  reason.Code
	code    int // JSON-RPC error code when denied
	grant   int // policy grant index, -1 when none decided
	version string
	// filter is set for list methods: the response must be filtered;
	// page is the page the request asks for (toolpages.go).
	filter listKind
	page   listPage
	// origin is set for a decided request whose answer may be a task
	// handle: the task is then bound to the caller (see tasks.go).
	origin *taskOrigin
	// what the request targets, for the audit event.
	tool, resource, prompt string
	argsHash               string
	// approval, for a tools/call allowed by a grant with an approval, is
	// the group that must approve it first (holds.go).
	approval        string
	approvalTimeout time.Duration
	// basis is what the policy's decision depended on, for the audit
	// event (basis.go); nil when the policy was not asked.
	basis *audit.Basis
	// shadow is the shadow policy's decision when it differs (shadow.go).
	shadow *audit.ShadowDecision
}

func (v verdict) rule() string {
	if v.grant < 0 {
		return ""
	}
	return strconv.Itoa(v.grant)
}

// passThrough lists the requests that reach the upstream with no policy
// decision beyond admission, each with the reason it needs none. Every
// other request is decided by the policy (decide), answered with a
// filtered list (listMethods), bound to its task (tasks.go), or denied
// with unknown_method: there is no prefix wildcard, so a method an
// upstream invents is never forwarded undecided.
var passThrough = map[string]string{
	"initialize":            "the handshake: capabilities and versions, no tool, resource or prompt",
	"ping":                  "liveness only",
	"logging/setLevel":      "sets how much the server logs to this session; reveals nothing the session cannot see",
	"resources/unsubscribe": "only stops notifications; subscribing is decided",
	"server/discover":       "the server's versions and capabilities (2026-07-28), what initialize returns",
}

// clientNotifications lists the notifications a client may send, each with
// why it needs no decision; any other notification is denied
// (unknown_method).
var clientNotifications = map[string]string{
	"notifications/initialized":        "ends the handshake",
	"notifications/cancelled":          "cancels the caller's own request in flight",
	"notifications/progress":           "progress of a server-initiated request the client is serving",
	"notifications/roots/list_changed": "tells the server to ask for the client's roots again",
	"notifications/tasks/status":       "status of a task the client hosts for the server (2025-11-25)",
}

var listMethods = map[string]listKind{
	"tools/list":               listTools,
	"prompts/list":             listPrompts,
	"resources/list":           listResources,
	"resources/templates/list": listTemplates,
	"tasks/list":               listTasks,
}

// decide answers one decoded client message for peer p under p.state, in
// steps that each may end it, in this order: the message's kind (only
// requests go further), the methods answered without the policy, what the
// request targets, the policy's decision, and the binding of a task the
// answer may start. The order is part of the answer: a malformed or
// unknown request is refused as such even when there is no policy, and an
// owner's tasks/cancel passes without one.
func (g *Gateway) decide(p *peerInfo, m *mcpwire.Message) verdict {
	st := p.state
	v := verdict{grant: -1, version: st.PolicyVersion()}
	if m.Kind != mcpwire.KindRequest {
		return v.notRequest(m)
	}
	if _, ok := passThrough[m.Method]; ok {
		return v.allowed()
	}
	if k, ok := listMethods[m.Method]; ok {
		v.filter, v.page = k, pageOf(m)
		return v.allowed()
	}
	q, answered := g.target(p, m, &v)
	if answered {
		return v
	}
	if st.Policy == nil {
		v.shadow = shadowOf(st, q, policy.Decision{Reason: reason.NoPolicy, Grant: -1})
		return v.denied(CodeDenied, reason.NoPolicy)
	}
	v.basis = basisOf(&q, m, st.Policy)
	d := q.ask(st.Policy, &v)
	v.shadow = shadowOf(st, q, d)
	v.grant, v.version = d.Grant, d.Version
	if !d.Allow {
		return v.refusedBy(d)
	}
	if del := p.ref.del; del != nil {
		if why := del.check(st, q); why != "" {
			return v.denied(CodeDenied, why)
		}
	}
	v.allow, v.reason = true, d.Reason
	if m.Method == "tools/call" {
		v.approval, v.approvalTimeout = d.Approval, d.ApprovalTimeout
	}
	if v.reason == "" {
		v.reason = reason.Allowed
	}
	return v.bindTask(m, q.req)
}

// allowed makes v an allow for the default reason and returns it.
func (v *verdict) allowed() verdict {
	v.allow, v.reason = true, reason.Allowed
	return *v
}

// denied makes v a denial with a JSON-RPC code and a reason, and returns it.
func (v *verdict) denied(code int, why reason.Code) verdict {
	v.allow, v.code, v.reason = false, code, why
	return *v
}

// notRequest answers a message that is not a request. A response answers a
// request the upstream sent (sampling, elicitation, roots), so the
// upstream asked for it; a notification passes only when a client may
// send it; anything else is malformed.
func (v *verdict) notRequest(m *mcpwire.Message) verdict {
	switch m.Kind {
	case mcpwire.KindResponse:
		return v.allowed()
	case mcpwire.KindNotification:
		if _, ok := clientNotifications[m.Method]; ok {
			return v.allowed()
		}
		return v.denied(CodeDenied, reason.UnknownMethod)
	}
	return v.denied(CodeRejected, reason.Malformed)
}

// question is what the policy is asked about one request.
type question struct {
	req policy.Request
	// more are further resource URIs decided with req, each as req with
	// that Resource (the subscriptions of a subscriptions/listen after
	// the first).
	more []string
}

// ask asks pol about q: allowed only when req and every further URI
// are. When a further URI is the one denied, v names it as the resource.
func (q question) ask(pol *policy.Policy, v *verdict) policy.Decision {
	d := pol.Decide(q.req)
	for _, uri := range q.more {
		if !d.Allow {
			break
		}
		q.req.Resource = uri
		if d = pol.Decide(q.req); !d.Allow {
			v.resource = uri
		}
	}
	return d
}

// refusedBy makes v the denial of decision d and returns it.
func (v *verdict) refusedBy(d policy.Decision) verdict {
	why := d.Reason
	if why == "" {
		// Decide always says why; a denial never goes without a code.
		why = reason.NotGranted
	}
	code := CodeDenied
	if why == reason.CaseVariantKey {
		// Ambiguous input, like a case-variant pair: rejected.
		code = CodeRejected
	}
	return v.denied(code, why)
}

// bindTask finishes the allow v of request m, asked as req: a decided
// request may be answered with a task handle, which is then bound to the
// caller (see tasks.go). Task methods and subscriptions/listen start no
// task. A malformed task field denies the request after all.
func (v *verdict) bindTask(m *mcpwire.Message, req policy.Request) verdict {
	if mcpwire.IsTaskMethod(m.Method) || m.Method == "subscriptions/listen" {
		return *v
	}
	task, err := m.TaskRequest()
	if err != nil {
		return v.denied(CodeRejected, reason.Malformed)
	}
	if task {
		o := originOf(req, *v, len(m.Params))
		v.origin = &o
	}
	return *v
}

// target reads what request m targets into the question for the policy,
// and records the target in v for the audit event. It reports answered,
// with the answer in v, when m needs no policy decision after all (a
// subscriptions/listen without subscriptions, an owner's tasks/cancel) or
// cannot have one (malformed, an unknown task, a method that is neither
// listed nor decided: there is no wildcard).
func (g *Gateway) target(p *peerInfo, m *mcpwire.Message, v *verdict) (q question, answered bool) {
	req := &q.req
	*req = policy.Request{Src: p.node, Dst: p.state.Self, Method: m.Method}
	if d := p.ref.del; d != nil {
		req.Delegation = d.Policy
	}
	malformed := func() (question, bool) {
		v.denied(CodeRejected, reason.Malformed)
		return q, true
	}
	switch {
	case m.Method == "tools/call":
		tc, err := m.ToolCall()
		if err != nil {
			return malformed()
		}
		req.Action, req.Tool, req.Args = policy.ActionTool, tc.Name, tc.Arguments
		v.tool = tc.Name
		if g.cfg.RecordArgsHash {
			v.argsHash = argsHash(m.Params)
		}
	case m.Method == "resources/read", m.Method == "resources/subscribe":
		uri, err := m.ResourceURI()
		if err != nil {
			return malformed()
		}
		req.Action, req.Resource = policy.ActionResource, uri
		v.resource = uri
	case m.Method == "prompts/get":
		name, args, err := m.PromptGet()
		if err != nil {
			return malformed()
		}
		req.Action, req.Prompt, req.Args = policy.ActionPrompt, name, args
		v.prompt = name
	case m.Method == "completion/complete":
		if !completionTarget(m, req, v) {
			return malformed()
		}
	case m.Method == "subscriptions/listen":
		// The 2026-07-28 successor of the GET stream and of
		// resources/subscribe: list_changed notifications are the
		// gateway's to filter (it injects them), but every URI in
		// resourceSubscriptions is decided as a subscription.
		f, err := m.Listen()
		if err != nil {
			return malformed()
		}
		if len(f.ResourceSubscriptions) == 0 {
			v.allowed()
			return q, true
		}
		req.Action, req.Method, req.Resource = policy.ActionResource, "resources/subscribe", f.ResourceSubscriptions[0]
		q.more = f.ResourceSubscriptions[1:]
		v.resource = req.Resource
	case mcpwire.IsTaskMethod(m.Method):
		return q, g.taskTarget(p, m, req, v)
	default:
		v.denied(CodeDenied, reason.UnknownMethod)
		return q, true
	}
	return q, false
}

// completionTarget reads what a completion/complete request completes: a
// prompt's argument, or a resource template's variable (decided as the
// template, not as a URI). It reports false for a malformed reference.
func completionTarget(m *mcpwire.Message, req *policy.Request, v *verdict) bool {
	ref, err := m.CompletionRef()
	if err != nil {
		return false
	}
	switch ref.Type {
	case "ref/prompt":
		req.Action, req.Prompt = policy.ActionPrompt, ref.Name
		v.prompt = ref.Name
	case "ref/resource":
		// The reference is a URI template, not a URI.
		req.Action, req.Resource, req.Template = policy.ActionResource, ref.URI, true
		v.resource = ref.URI
	default:
		return false
	}
	return true
}

// taskTarget makes a task method ask again what the request that created
// the task asked, for the task's owner only. It reports answered, with the
// answer in v, for a malformed or unknown task (which includes another
// identity's) and for tasks/cancel.
func (g *Gateway) taskTarget(p *peerInfo, m *mcpwire.Message, req *policy.Request, v *verdict) (answered bool) {
	id, err := m.TaskID()
	if err != nil {
		v.denied(CodeRejected, reason.Malformed)
		return true
	}
	o, ok := g.tasks.lookup(id, p.ref, g.now())
	if !ok {
		v.denied(CodeRejected, reason.UnknownTask)
		return true
	}
	v.tool, v.resource, v.prompt = o.tool, o.resource, o.prompt
	if m.Method == "tasks/cancel" {
		// Its owner may always stop a task, even once the request that
		// started it would no longer be allowed.
		v.allowed()
		return true
	}
	req.Action, req.Method, req.Tool, req.Resource, req.Prompt, req.Args, req.Template =
		o.req.Action, o.req.Method, o.req.Tool, o.req.Resource, o.req.Prompt, o.req.Args, o.req.Template
	return false
}

// argsHash is the hex SHA-256 of a tool call's raw arguments, as sent.
func argsHash(params json.RawMessage) string {
	var p struct {
		Arguments json.RawMessage `json:"arguments"`
	}
	if json.Unmarshal(params, &p) != nil || p.Arguments == nil {
		return ""
	}
	sum := sha256.Sum256(p.Arguments)
	return hex.EncodeToString(sum[:])
}

// visibleIn answers whether name, an entry of a k list, is visible.
func visibleIn(vis policy.Visibility, k listKind, name string) bool {
	switch k {
	case listTools:
		return vis.Tool(name)
	case listPrompts:
		return vis.Prompt(name)
	case listResources:
		return vis.Resource(name)
	case listTemplates:
		return vis.ResourceTemplate(name)
	}
	return false
}

// headerCheck verifies that the routing headers a client sent agree with the
// body. It returns "" when they do.
func headerCheck(h map[string][]string, m *mcpwire.Message) reason.Code {
	get := func(k string) (string, bool, bool) {
		vs := anyCase(h, k)
		switch len(vs) {
		case 0:
			return "", false, true
		case 1:
			return vs[0], true, true
		}
		return "", true, false // repeated header: never guess which one counts
	}
	hv, _, ok1 := get(mcpwire.HeaderProtocolVersion)
	method, hasMethod, ok2 := get(mcpwire.HeaderMethod)
	name, hasName, ok3 := get(mcpwire.HeaderName)
	if !ok1 || !ok2 || !ok3 {
		return reason.HeaderMismatch
	}
	mv := ""
	if m.Kind == mcpwire.KindRequest || m.Kind == mcpwire.KindNotification {
		var err error
		if mv, err = m.ProtocolVersionMeta(); err != nil {
			return reason.Malformed // a case-variant _meta key
		}
	}
	if mv != "" && hv != "" && mv != hv {
		return reason.HeaderMismatch
	}
	modern := max(hv, mv) >= mcpwire.VersionStateless
	if m.Kind == mcpwire.KindResponse {
		if hasMethod || hasName {
			return reason.HeaderMismatch
		}
		return ""
	}
	if mv != "" && hv == "" {
		// _meta names a protocol version, the header must say the same.
		return reason.HeaderMismatch
	}
	if hasMethod || modern {
		if !hasMethod || method != m.Method {
			return reason.HeaderMismatch
		}
	}
	needsName := m.Method == "tools/call" || m.Method == "resources/read" || m.Method == "prompts/get"
	if !needsName {
		if hasName {
			return reason.HeaderMismatch
		}
		return ""
	}
	if !hasName && !modern {
		return ""
	}
	if !hasName {
		return reason.HeaderMismatch
	}
	body, ok := bodyName(m)
	if hv, valid := decodeHeaderValue(name); !ok || !valid || hv != body {
		return reason.HeaderMismatch
	}
	return ""
}

// anyCase returns the values of h under every spelling of the key k. The
// forward passes a mirror header in whatever case it has
// ([mcpwire.IsMirrorHeader]), so the check must see every spelling: two
// spellings count as a repeated header. (net/http hands the gateway
// canonical keys only; this keeps the check closed if that ever changes.)
func anyCase(h map[string][]string, k string) []string {
	vs := h[k]
	for hk, more := range h {
		if hk != k && strings.EqualFold(hk, k) {
			vs = append(vs[:len(vs):len(vs)], more...)
		}
	}
	return vs
}

// bodyName is the name the Mcp-Name header must carry for m.
func bodyName(m *mcpwire.Message) (string, bool) {
	switch m.Method {
	case "tools/call":
		tc, err := m.ToolCall()
		return tc.Name, err == nil
	case "resources/read":
		uri, err := m.ResourceURI()
		return uri, err == nil
	case "prompts/get":
		name, _, err := m.PromptGet()
		return name, err == nil
	}
	return "", false
}
