package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// MCP 2026-07-28 (SEP-2243) lets a tool mirror arguments into HTTP headers:
// a property of its inputSchema annotated "x-mcp-header": "Region" is sent
// as Mcp-Param-Region as well as in the body. An upstream, or a load
// balancer in front of it, may route or act on the header, so a header the
// policy never saw is a way around it. The gateway therefore forwards an
// Mcp-Param-* header only when it names an annotated argument of the tool
// being called and its value, decoded, equals that argument in the body,
// and it refuses a call that leaves out the header of an argument the body
// holds (as the upstream must). The annotations are learned from the
// tools/list results the gateway filters; until it has seen the tool's
// schema, any Mcp-Param-* header on a call to it is refused (the client's
// answer to that, per the specification, is to list tools and retry).
// Mcp-Param-* headers on any other message are refused.

// maxParamTools bounds the tools whose annotations are kept.
const maxParamTools = 10_000

// paramHeaders maps tool names to what their schemas declare.
type paramHeaders struct {
	mu     sync.Mutex
	byTool map[string]*toolParams
}

// toolParams is what one tool's inputSchema declares: for each annotated
// argument, its lower-case header name (after Mcp-Param-) and its property
// path in the arguments. invalid says the annotations break the rules (a
// name that is not an HTTP token, two names equal but for case, a value
// that is not a string): such a tool is invalid to a conforming client, no
// header of it can be checked, and none passes.
type toolParams struct {
	paths   map[string][]string
	invalid bool
}

func newParamHeaders() *paramHeaders {
	return &paramHeaders{byTool: make(map[string]*toolParams)}
}

// of returns what tool declares (nil when nothing is known).
func (h *paramHeaders) of(tool string) *toolParams {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byTool[tool]
}

// learn records the annotations of every tool in an unfiltered tools/list
// result, replacing what was known for those tools.
func (h *paramHeaders) learn(result []byte) {
	h.mu.Lock()
	empty := len(h.byTool) == 0
	h.mu.Unlock()
	if empty && !bytes.Contains(result, []byte("x-mcp-header")) {
		return // the common case: nothing annotated, nothing to forget
	}
	var r struct {
		Tools []map[string]json.RawMessage `json:"tools"`
	}
	if json.Unmarshal(result, &r) != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range r.Tools {
		var name string
		if json.Unmarshal(t["name"], &name) != nil || name == "" {
			continue
		}
		tp := &toolParams{paths: make(map[string][]string)}
		tp.annotations(t["inputSchema"], nil)
		switch {
		case len(tp.paths) == 0 && !tp.invalid:
			delete(h.byTool, name)
		case len(h.byTool) < maxParamTools || h.byTool[name] != nil:
			h.byTool[name] = tp
		}
	}
}

// annotations adds the x-mcp-header annotations of schema, whose
// properties sit at path. Only properties reachable through "properties"
// keys count, as the specification requires.
func (tp *toolParams) annotations(schema json.RawMessage, path []string) {
	if len(path) > 32 {
		return
	}
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if json.Unmarshal(schema, &s) != nil {
		return
	}
	for prop, ps := range s.Properties {
		p := append(path[:len(path):len(path)], prop)
		var a struct {
			Header json.RawMessage `json:"x-mcp-header"`
		}
		if json.Unmarshal(ps, &a) == nil && a.Header != nil {
			var name string
			switch {
			case json.Unmarshal(a.Header, &name) != nil || !validToken(name):
				tp.invalid = true
			case tp.paths[strings.ToLower(name)] != nil:
				tp.invalid = true // two names equal but for case
			default:
				tp.paths[strings.ToLower(name)] = p
			}
		}
		tp.annotations(ps, p)
	}
}

// validToken reports whether s is an HTTP field-name token.
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// paramCheck verifies the Mcp-Param-* headers of a request against its
// body; it returns "" when they agree, else reason.HeaderMismatch.
func (g *Gateway) paramCheck(h http.Header, m *mcpwire.Message) reason.Code {
	var names []string
	for k := range h {
		if mcpwire.IsParamHeader(k) {
			names = append(names, k)
		}
	}
	if m.Kind != mcpwire.KindRequest || m.Method != "tools/call" {
		if len(names) > 0 {
			return reason.HeaderMismatch
		}
		return ""
	}
	tc, err := m.ToolCall()
	if err != nil {
		return "" // the decision refuses the call as malformed
	}
	tp := g.params.of(tc.Name)
	if tp == nil || tp.invalid {
		// Nothing (valid) is known of the tool's headers: none can be
		// checked, so none passes.
		if len(names) > 0 {
			return reason.HeaderMismatch
		}
		return ""
	}
	want := tp.paths
	seen := make(map[string]bool, len(names))
	for _, k := range names {
		vs := h[k]
		n := strings.ToLower(k[len(mcpwire.HeaderParamPrefix):])
		path, ok := want[n]
		if len(vs) != 1 || seen[n] || !ok {
			return reason.HeaderMismatch
		}
		seen[n] = true
		v, present := argAt(tc.Arguments, path)
		if !present || v == nil || !headerMatches(vs[0], v) {
			return reason.HeaderMismatch
		}
	}
	for n, path := range want {
		if v, present := argAt(tc.Arguments, path); present && v != nil && !seen[n] {
			return reason.HeaderMismatch // the body holds it, the header is missing
		}
	}
	return ""
}

// argAt returns the value at path in args.
func argAt(args map[string]any, path []string) (any, bool) {
	var v any = args
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

// headerMatches reports whether the header value hv (plain visible ASCII,
// or =?base64?...?=) carries the primitive body value v: a string as it
// is, an integer in decimal (compared as a number), a boolean as "true" or
// "false". Other values (numbers with fractions, objects, arrays) cannot
// be mirrored and never match.
func headerMatches(hv string, v any) bool {
	got, ok := decodeHeaderValue(hv)
	if !ok {
		return false
	}
	switch x := v.(type) {
	case string:
		return got == x
	case bool:
		return got == strconv.FormatBool(x)
	case json.Number:
		b, err1 := strconv.ParseFloat(string(x), 64)
		h, err2 := strconv.ParseInt(got, 10, 64)
		const maxSafe = 1<<53 - 1
		return err1 == nil && err2 == nil && b == math.Trunc(b) && math.Abs(b) <= maxSafe && float64(h) == b
	}
	return false
}
