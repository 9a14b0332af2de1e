package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"

	"agentmesh/internal/mcpwire"
	"agentmesh/internal/policy"
)

// verdict is the gateway's answer to one client message.
type verdict struct {
	allow   bool
	reason  string
	code    int // JSON-RPC error code when denied
	grant   int // policy grant index, -1 when none decided
	version string
	// filter is set for list methods: the response must be filtered.
	filter listKind
	// what the request targets, for the audit event.
	tool, resource, prompt string
	argsHash               string
}

func (v verdict) rule() string {
	if v.grant < 0 {
		return ""
	}
	return strconv.Itoa(v.grant)
}

// passThrough is the set of requests that need no policy decision beyond
// admission.
var passThrough = map[string]bool{
	"initialize":            true,
	"ping":                  true,
	"logging/setLevel":      true,
	"resources/unsubscribe": true,
	"server/discover":       true,
	"subscriptions/listen":  true,
}

var listMethods = map[string]listKind{
	"tools/list":               listTools,
	"prompts/list":             listPrompts,
	"resources/list":           listResources,
	"resources/templates/list": listTemplates,
}

// decide answers one decoded client message for peer p under p.state.
func (g *Gateway) decide(p *peerInfo, m *mcpwire.Message) verdict {
	st := p.state
	v := verdict{grant: -1, version: versionOf(st)}
	allow := func() verdict { v.allow, v.reason = true, ReasonAllowed; return v }
	deny := func(code int, reason string) verdict { v.allow, v.code, v.reason = false, code, reason; return v }

	switch m.Kind {
	case mcpwire.KindResponse:
		// An answer to a server-initiated request (sampling, elicitation,
		// roots): the upstream asked for it.
		return allow()
	case mcpwire.KindNotification:
		if strings.HasPrefix(m.Method, "notifications/") {
			return allow()
		}
		return deny(CodeDenied, ReasonUnknownMethod)
	case mcpwire.KindRequest:
	default:
		return deny(CodeRejected, ReasonMalformed)
	}

	if passThrough[m.Method] || strings.HasPrefix(m.Method, "tasks/") {
		return allow()
	}
	if k, ok := listMethods[m.Method]; ok {
		v.filter = k
		return allow()
	}
	req := policy.Request{Src: p.peer.Node, Dst: st.Self, Method: m.Method}
	switch m.Method {
	case "tools/call":
		tc, err := m.ToolCall()
		if err != nil {
			return deny(CodeRejected, ReasonMalformed)
		}
		req.Action, req.Tool, req.Args = policy.ActionTool, tc.Name, tc.Arguments
		v.tool = tc.Name
		if g.cfg.RecordArgsHash {
			v.argsHash = argsHash(m.Params)
		}
	case "resources/read", "resources/subscribe":
		uri, err := m.ResourceURI()
		if err != nil {
			return deny(CodeRejected, ReasonMalformed)
		}
		req.Action, req.Resource = policy.ActionResource, uri
		v.resource = uri
	case "prompts/get":
		name, args, err := m.PromptGet()
		if err != nil {
			return deny(CodeRejected, ReasonMalformed)
		}
		req.Action, req.Prompt, req.Args = policy.ActionPrompt, name, args
		v.prompt = name
	case "completion/complete":
		ref, err := m.CompletionRef()
		if err != nil {
			return deny(CodeRejected, ReasonMalformed)
		}
		switch ref.Type {
		case "ref/prompt":
			req.Action, req.Prompt = policy.ActionPrompt, ref.Name
			v.prompt = ref.Name
		case "ref/resource":
			req.Action, req.Resource = policy.ActionResource, ref.URI
			v.resource = ref.URI
		default:
			return deny(CodeRejected, ReasonMalformed)
		}
	default:
		return deny(CodeDenied, ReasonUnknownMethod)
	}
	if st.Policy == nil {
		return deny(CodeDenied, ReasonNoPolicy)
	}
	d := st.Policy.Decide(req)
	v.grant, v.version = d.Grant, d.Version
	if !d.Allow {
		reason := string(d.Reason)
		if reason == "" {
			reason = "denied"
		}
		return deny(CodeDenied, reason)
	}
	v.allow, v.reason = true, string(d.Reason)
	if v.reason == "" {
		v.reason = ReasonAllowed
	}
	return v
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
func headerCheck(h map[string][]string, m *mcpwire.Message) string {
	get := func(k string) (string, bool, bool) {
		vs := h[k]
		switch len(vs) {
		case 0:
			return "", false, true
		case 1:
			return vs[0], true, true
		}
		return "", true, false // repeated header: never guess which one counts
	}
	hv, _, ok1 := get("Mcp-Protocol-Version")
	method, hasMethod, ok2 := get("Mcp-Method")
	name, hasName, ok3 := get("Mcp-Name")
	if !ok1 || !ok2 || !ok3 {
		return ReasonHeaderMismatch
	}
	mv := ""
	if m.Kind == mcpwire.KindRequest || m.Kind == mcpwire.KindNotification {
		var err error
		if mv, err = m.ProtocolVersionMeta(); err != nil {
			return ReasonMalformed // a case-variant _meta key
		}
	}
	if mv != "" && hv != "" && mv != hv {
		return ReasonHeaderMismatch
	}
	modern := max(hv, mv) >= "2026-07-28"
	if m.Kind == mcpwire.KindResponse {
		if hasMethod || hasName {
			return ReasonHeaderMismatch
		}
		return ""
	}
	if mv != "" && hv == "" {
		// _meta names a protocol version, the header must say the same.
		return ReasonHeaderMismatch
	}
	if hasMethod || modern {
		if !hasMethod || method != m.Method {
			return ReasonHeaderMismatch
		}
	}
	needsName := m.Method == "tools/call" || m.Method == "resources/read" || m.Method == "prompts/get"
	if !needsName {
		if hasName {
			return ReasonHeaderMismatch
		}
		return ""
	}
	if !hasName && !modern {
		return ""
	}
	if !hasName {
		return ReasonHeaderMismatch
	}
	body, ok := bodyName(m)
	if !ok || decodeHeaderValue(name) != body {
		return ReasonHeaderMismatch
	}
	return ""
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
