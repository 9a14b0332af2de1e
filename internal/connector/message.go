package connector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

// kind classifies a JSON-RPC message.
type kind uint8

const (
	kindUnknown      kind = iota // not a JSON-RPC object we understand; relayed as is
	kindRequest                  // method and id
	kindNotification             // method, no id
	kindResponse                 // result or error, no method
	kindBatch                    // a JSON array (2025-03-26 batching)
)

// message is what the connector needs to know about one JSON-RPC message to
// route it. It never rewrites the message itself.
type message struct {
	raw    []byte
	kind   kind
	id     json.RawMessage // as sent; nil for notifications
	method string
	// name is params.name (tools/call, prompts/get) or params.uri
	// (resources/read): the value of the Mcp-Name header.
	name string
	// version is params._meta[mcpwire.MetaKeyProtocolVersion], if any.
	version string
	// traceparent and tracestate are params._meta's trace context (W3C
	// Trace Context, SEP-414), if the agent sent one.
	traceparent, tracestate string
	// cancelID is params.requestId of notifications/cancelled.
	cancelID  json.RawMessage
	hasError  bool
	hasResult bool
}

type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method json.RawMessage `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

type paramsEnvelope struct {
	Name      json.RawMessage            `json:"name"`
	URI       json.RawMessage            `json:"uri"`
	RequestID json.RawMessage            `json:"requestId"`
	Meta      map[string]json.RawMessage `json:"_meta"`
}

// parseMessage classifies b. It is lenient on purpose: whatever it cannot
// understand is relayed untouched and judged by the gateway's strict decoder.
func parseMessage(b []byte) message {
	m := message{raw: b}
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 {
		return m
	}
	if t[0] == '[' {
		m.kind = kindBatch
		return m
	}
	if t[0] != '{' {
		return m
	}
	var env envelope
	if err := json.Unmarshal(t, &env); err != nil {
		return m
	}
	hasID := len(env.ID) > 0 && !bytes.Equal(env.ID, []byte("null"))
	if hasID {
		m.id = env.ID
	}
	m.hasResult = len(env.Result) > 0
	m.hasError = len(env.Error) > 0 && !bytes.Equal(env.Error, []byte("null"))
	if len(env.Method) > 0 {
		if err := json.Unmarshal(env.Method, &m.method); err != nil || m.method == "" {
			return message{raw: b}
		}
		m.kind = kindNotification
		if hasID {
			m.kind = kindRequest
		}
		m.parseParams(env.Params)
		return m
	}
	if m.hasResult || m.hasError {
		m.kind = kindResponse
		m.id = env.ID
	}
	return m
}

func (m *message) parseParams(raw json.RawMessage) {
	if len(raw) == 0 || raw[0] != '{' {
		return
	}
	var p paramsEnvelope
	if err := json.Unmarshal(raw, &p); err != nil {
		return
	}
	if v, ok := p.Meta[mcpwire.MetaKeyProtocolVersion]; ok {
		m.version = jsonString(v)
	}
	m.traceparent = jsonString(p.Meta["traceparent"])
	m.tracestate = jsonString(p.Meta["tracestate"])
	switch m.method {
	case "tools/call", "prompts/get":
		m.name = jsonString(p.Name)
	case "resources/read":
		m.name = jsonString(p.URI)
	case "notifications/cancelled":
		m.cancelID = p.RequestID
	}
}

// jsonString returns raw decoded as a JSON string, or "" if it is not one.
func jsonString(raw json.RawMessage) string {
	if len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return ""
	}
	return s
}

// idKey is a canonical form of a JSON-RPC id, for matching a response to its
// request.
func idKey(id json.RawMessage) string {
	if len(id) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, id); err != nil {
		return string(id)
	}
	return buf.String()
}

// setMCPHeaders sets the Streamable HTTP headers for m on h: the protocol
// version (from the message's _meta, else the negotiated one), the session id
// (sessions only) and, from the stateless protocol on, Mcp-Method and
// Mcp-Name from the body.
func setMCPHeaders(h http.Header, m *message, negotiated, sessionID string) {
	version := m.version
	if version == "" {
		version = negotiated
	}
	if version != "" {
		h.Set(mcpwire.HeaderProtocolVersion, version)
	}
	if sessionID != "" {
		h.Set(mcpwire.HeaderSessionID, sessionID)
	}
	if version >= mcpwire.VersionStateless && (m.kind == kindRequest || m.kind == kindNotification) {
		h.Set(mcpwire.HeaderMethod, m.method)
		if m.name != "" {
			h.Set(mcpwire.HeaderName, m.name)
		}
	}
}

// oneLine returns b as a single line: JSON that spans lines is compacted.
func oneLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if bytes.IndexByte(b, '\n') < 0 && bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err == nil {
		return buf.Bytes()
	}
	// Not JSON: raw line breaks cannot be part of a valid message anyway.
	return bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, b)
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

type rpcErrorResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   any             `json:"error"`
}

// errorResponse encodes a JSON-RPC error response for id.
func errorResponse(id json.RawMessage, code int, msg string, data any) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, err := json.Marshal(rpcErrorResponse{JSONRPC: "2.0", ID: id, Error: rpcError{Code: code, Message: msg, Data: data}})
	if err != nil {
		// Only reachable with an invalid id, which parseMessage never yields.
		return []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":null,"error":{"code":%d,"message":"connector error"}}`, code))
	}
	return b
}

// withID re-addresses a JSON-RPC error response that the gateway sent with a
// null id (it failed before reading the request) to the request's id,
// keeping the error object as the gateway wrote it.
func withID(errObj json.RawMessage, id json.RawMessage) []byte {
	b, err := json.Marshal(rpcErrorResponse{JSONRPC: "2.0", ID: id, Error: errObj})
	if err != nil {
		return nil
	}
	return b
}

// shortText returns a safe, short, single-line excerpt of an HTTP error body.
func shortText(body []byte) string {
	s := strings.TrimSpace(string(body))
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	const max = 200
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "..."
	}
	return s
}
