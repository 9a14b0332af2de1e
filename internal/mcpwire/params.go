package mcpwire

import (
	"encoding/json"
	"fmt"
)

// MetaKeyProtocolVersion is the params._meta key that carries the protocol
// version on every request from MCP 2026-07-28 on (SEP-2575).
const MetaKeyProtocolVersion = "io.modelcontextprotocol/protocolVersion"

// ToolCall is what a policy reads from the params of a tools/call request.
type ToolCall struct {
	Name      string          // unescaped tool name; never empty
	Arguments map[string]any  // decoded with UseNumber (numbers are json.Number); nil when absent or null
	Meta      json.RawMessage // params._meta as received; nil when absent
}

// Ref is the reference of a completion/complete request.
type Ref struct {
	Type string // "ref/prompt" or "ref/resource"
	Name string // prompt name, set for "ref/prompt"
	URI  string // resource URI or URI template, set for "ref/resource"
}

func invalidParams(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidParams, fmt.Sprintf(format, args...))
}

// paramsObject returns m.Params after checking that m is a request for one
// of methods and that its params are a validated object.
func (m *Message) paramsObject(op string, methods ...string) ([]byte, error) {
	found := false
	for _, meth := range methods {
		found = found || m.Method == meth
	}
	if !found {
		return nil, fmt.Errorf("%s: %w: method %q", op, ErrWrongMethod, m.Method)
	}
	p, err := m.validParams()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if len(p) == 0 {
		return nil, fmt.Errorf("%s: %w", op, invalidParams("missing params"))
	}
	if p[0] != '{' {
		return nil, fmt.Errorf("%s: %w", op, invalidParams("params must be an object"))
	}
	return p, nil
}

// validParams returns m.Params with surrounding whitespace trimmed, running
// the strict scanner over it unless it is the slice Decode validated (a
// Message built by hand, or whose Params were replaced, is checked again).
func (m *Message) validParams() ([]byte, error) {
	p := m.Params
	if len(p) == 0 || sameSlice(p, m.params) {
		return p, nil
	}
	s := getScanner(p, DefaultMaxDepth, true)
	defer putScanner(s)
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	start := skipWS(p, 0)
	return p[start:skipValue(p, start)], nil
}

// nameValue returns the unescaped string v, which must be a non-empty JSON
// string without control characters.
func nameValue(field string, v []byte) (string, error) {
	if v[0] != '"' {
		return "", invalidParams("%s must be a string", field)
	}
	b := stringBytes(nil, v)
	if len(b) == 0 {
		return "", invalidParams("%s is empty", field)
	}
	if hasControl(b) {
		return "", invalidParams("%s contains a control character", field)
	}
	return string(b), nil
}

// argsValue decodes an arguments object; null means absent.
func argsValue(field string, v []byte) (map[string]any, error) {
	switch v[0] {
	case 'n':
		return nil, nil
	case '{':
		a, _ := buildValue(v, 0)
		return a.(map[string]any), nil
	default:
		return nil, invalidParams("%s must be an object", field)
	}
}

// ToolCall reads the params of a tools/call request: the tool name (a
// non-empty string without control characters), the arguments (an object,
// or absent/null) and _meta (an object, or absent/null).
func (m *Message) ToolCall() (ToolCall, error) {
	const op = "tools/call params"
	p, err := m.paramsObject(op, "tools/call")
	if err != nil {
		return ToolCall{}, err
	}
	var tc ToolCall
	haveName := false
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		var i int
		if i, err = keyIndex(k, "name", "arguments", "_meta"); err != nil {
			return ToolCall{}, fmt.Errorf("%s: %w", op, err)
		}
		switch i {
		case 0:
			tc.Name, err = nameValue("name", v)
			haveName = true
		case 1:
			tc.Arguments, err = argsValue("arguments", v)
		case 2:
			tc.Meta, err = metaValue(v)
		}
		if err != nil {
			return ToolCall{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	if !haveName {
		return ToolCall{}, fmt.Errorf("%s: %w", op, invalidParams("missing name"))
	}
	return tc, nil
}

func metaValue(v []byte) (json.RawMessage, error) {
	switch v[0] {
	case 'n':
		return nil, nil
	case '{':
		return v, nil
	default:
		return nil, invalidParams("_meta must be an object")
	}
}

// ResourceURI returns params.uri of a resources/read, resources/subscribe
// or resources/unsubscribe request: a non-empty string without control
// characters, unescaped but otherwise as sent (no URI normalisation).
func (m *Message) ResourceURI() (string, error) {
	return m.stringParam("resource params", "uri", "resources/read", "resources/subscribe", "resources/unsubscribe")
}

// stringParam returns the params member key of a request for one of
// methods: a non-empty string without control characters. A member that
// differs from key only in case is ErrCaseVariantKey.
func (m *Message) stringParam(op, key string, methods ...string) (string, error) {
	p, err := m.paramsObject(op, methods...)
	if err != nil {
		return "", err
	}
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, key)
		if err != nil {
			return "", fmt.Errorf("%s: %w", op, err)
		}
		if i == 0 {
			s, err := nameValue(key, v)
			if err != nil {
				return "", fmt.Errorf("%s: %w", op, err)
			}
			return s, nil
		}
	}
	return "", fmt.Errorf("%s: %w", op, invalidParams("missing %s", key))
}

// PromptGet reads the params of a prompts/get request: the prompt name and
// its arguments (decoded with UseNumber; nil when absent or null).
func (m *Message) PromptGet() (name string, args map[string]any, err error) {
	const op = "prompts/get params"
	p, err := m.paramsObject(op, "prompts/get")
	if err != nil {
		return "", nil, err
	}
	haveName := false
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		var i int
		if i, err = keyIndex(k, "name", "arguments"); err != nil {
			return "", nil, fmt.Errorf("%s: %w", op, err)
		}
		switch i {
		case 0:
			name, err = nameValue("name", v)
			haveName = true
		case 1:
			args, err = argsValue("arguments", v)
		}
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	if !haveName {
		return "", nil, fmt.Errorf("%s: %w", op, invalidParams("missing name"))
	}
	return name, args, nil
}

// CompletionRef reads params.ref of a completion/complete request. A
// "ref/prompt" reference must have a name and no uri; a "ref/resource"
// reference must have a uri and no name (as the MCP Go SDK requires, so
// the upstream cannot read the field the policy did not check). Other types
// are ErrInvalidParams.
func (m *Message) CompletionRef() (Ref, error) {
	const op = "completion/complete params"
	p, err := m.paramsObject(op, "completion/complete")
	if err != nil {
		return Ref{}, err
	}
	var refv []byte
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, "ref")
		if err != nil {
			return Ref{}, fmt.Errorf("%s: %w", op, err)
		}
		if i == 0 {
			refv = v
		}
	}
	if refv == nil {
		return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("missing ref"))
	}
	if refv[0] != '{' {
		return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("ref must be an object"))
	}
	var ref Ref
	var typ, name, uri []byte
	it = newObjIter(refv)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, "type", "name", "uri")
		if err != nil {
			return Ref{}, fmt.Errorf("%s: ref: %w", op, err)
		}
		switch i {
		case 0:
			typ = v
		case 1:
			name = v
		case 2:
			uri = v
		}
	}
	if typ == nil || typ[0] != '"' {
		return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("ref.type must be a string"))
	}
	switch t := string(stringBytes(nil, typ)); t {
	case "ref/prompt":
		if uri != nil {
			return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("ref/prompt must not have a uri"))
		}
		if name == nil {
			return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("ref/prompt needs a name"))
		}
		ref.Type = "ref/prompt"
		ref.Name, err = nameValue("ref.name", name)
	case "ref/resource":
		if name != nil {
			return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("ref/resource must not have a name"))
		}
		if uri == nil {
			return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("ref/resource needs a uri"))
		}
		ref.Type = "ref/resource"
		ref.URI, err = nameValue("ref.uri", uri)
	default:
		return Ref{}, fmt.Errorf("%s: %w", op, invalidParams("unknown ref.type %q", clip([]byte(t))))
	}
	if err != nil {
		return Ref{}, fmt.Errorf("%s: %w", op, err)
	}
	return ref, nil
}

// ProtocolVersionMeta returns params._meta["io.modelcontextprotocol/protocolVersion"]
// (the per-request protocol version of MCP 2026-07-28), or "" when params,
// _meta or the key is absent, or the value is not a string. A key that
// differs from "_meta" or from the version key only in case is
// ErrCaseVariantKey: an upstream binding keys case-insensitively would read
// the version the gateway did not compare with the header.
func (m *Message) ProtocolVersionMeta() (string, error) {
	meta, err := m.paramsMeta()
	if err != nil {
		return "", err
	}
	v, err := member(meta, MetaKeyProtocolVersion)
	if err != nil {
		return "", fmt.Errorf("protocol version: _meta: %w", err)
	}
	if len(v) == 0 || v[0] != '"' {
		return "", nil
	}
	return string(stringBytes(nil, v)), nil
}

// paramsMeta returns params._meta when params is an object and _meta an
// object; nil otherwise. A params key that differs from "_meta" only in
// case is ErrCaseVariantKey.
func (m *Message) paramsMeta() ([]byte, error) {
	p, err := m.validParams()
	if err != nil {
		return nil, err
	}
	v, err := member(p, "_meta")
	if err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	if len(v) == 0 || v[0] != '{' {
		return nil, nil
	}
	return v, nil
}

// ListCursor returns params.cursor of a list request (tools/list,
// prompts/list, resources/list, resources/templates/list, tasks/list):
// "" when params, or the cursor, is absent or null. A cursor that is not a
// string is ErrInvalidParams, and a key that differs from "cursor" only in
// case is ErrCaseVariantKey.
func (m *Message) ListCursor() (string, error) {
	p, err := m.validParams()
	if err != nil || len(p) == 0 || p[0] != '{' {
		return "", err
	}
	v, err := member(p, "cursor")
	switch {
	case err != nil:
		return "", fmt.Errorf("list params: %w", err)
	case len(v) == 0 || v[0] == 'n':
		return "", nil
	case v[0] != '"':
		return "", fmt.Errorf("list params: %w", invalidParams("cursor must be a string"))
	}
	return string(stringBytes(nil, v)), nil
}
