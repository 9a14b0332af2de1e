package mcpwire

import (
	"encoding/json"
	"fmt"
)

// Default limits applied for zero (or negative) fields of Limits.
const (
	DefaultMaxBytes = 4 << 20
	DefaultMaxDepth = 64
)

// Limits bound what Decode accepts. Zero fields mean the defaults
// (DefaultMaxBytes, DefaultMaxDepth).
type Limits struct {
	MaxBytes int // longest accepted input in bytes; default 4 MiB
	MaxDepth int // deepest accepted nesting of objects and arrays; default 64 (a message object is level 1, or 2 inside a batch)
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// Kind is the shape of a JSON-RPC message. The zero Kind is KindInvalid.
type Kind int

// The kinds of JSON-RPC message.
const (
	KindInvalid      Kind = iota
	KindRequest           // has method and id
	KindNotification      // has method, no id
	KindResponse          // has id and result or error
)

// String returns the lower-case name of k.
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	default:
		return "invalid"
	}
}

// Message is one validated JSON-RPC 2.0 message. Its byte slices alias the
// input given to Decode.
type Message struct {
	Kind   Kind
	ID     json.RawMessage // exact bytes of the id (string or integer; null only in an error response); nil for notifications
	Method string          // unescaped; "" for responses
	Params json.RawMessage // nil when absent; otherwise an object or array
	Result json.RawMessage // nil unless a success response
	Error  *Error          // nil unless an error response
	Raw    json.RawMessage // the exact bytes of this message as received

	// params and result are Params and Result as Decode validated them;
	// accessors skip re-validating while the exported fields still hold
	// these slices.
	params, result json.RawMessage
}

// Error is a JSON-RPC error object.
type Error struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Decode validates and decodes one JSON-RPC message or a batch (a JSON
// array of messages). It enforces every rule in the package documentation
// and fails closed: a batch with any invalid element is rejected as a whole
// (batch is still reported true, so the caller can tell). An empty batch is
// ErrInvalidRequest. The returned messages alias b.
func Decode(b []byte, lim Limits) (msgs []Message, batch bool, err error) {
	lim = lim.withDefaults()
	if len(b) > lim.MaxBytes {
		return nil, false, fmt.Errorf("decode: %w: %d bytes, limit %d", ErrTooLarge, len(b), lim.MaxBytes)
	}
	s := getScanner(b, lim.MaxDepth, true)
	defer putScanner(s)
	batch, err = s.top()
	if err != nil {
		return nil, batch, fmt.Errorf("decode: %w", err)
	}
	if batch && len(s.msgs) == 0 {
		return nil, true, fmt.Errorf("decode: %w: empty batch", ErrInvalidRequest)
	}
	msgs = make([]Message, len(s.msgs))
	for i := range s.msgs {
		if err := s.message(&s.msgs[i], &msgs[i]); err != nil {
			if batch {
				return nil, true, fmt.Errorf("decode: batch element %d: %w", i, err)
			}
			return nil, false, fmt.Errorf("decode: %w", err)
		}
	}
	return msgs, batch, nil
}

// Envelope fields, indexes into msgRec.has and msgRec.val.
const (
	fJSONRPC = iota
	fID
	fMethod
	fParams
	fResult
	fError
	nFields
)

// msgRec is what the scanner records about one message object.
type msgRec struct {
	span      span
	notObject bool
	has       [nFields]bool
	val       [nFields]span
	last      int   // field of the member being scanned, or -1
	badKey    span  // raw bytes of the first key not allowed in the envelope
	badErr    error // ErrCaseVariantKey or ErrInvalidRequest, for badKey
}

// classify notes which envelope field the key being scanned is; raw is the
// key as written (with quotes), fold its case fold.
func (r *msgRec) classify(raw, fold []byte, rawSpan span) {
	r.last = -1
	var f int
	switch string(fold) {
	case "JSONRPC":
		f = fJSONRPC
	case "ID":
		f = fID
	case "METHOD":
		f = fMethod
	case "PARAMS":
		f = fParams
	case "RESULT":
		f = fResult
	case "ERROR":
		f = fError
	default:
		r.bad(rawSpan, ErrInvalidRequest)
		return
	}
	var buf [16]byte
	if string(stringBytes(buf[:0], raw)) != envelopeKeys[f] {
		r.bad(rawSpan, ErrCaseVariantKey)
		return
	}
	r.last = f
}

var envelopeKeys = [nFields]string{"jsonrpc", "id", "method", "params", "result", "error"}

func (r *msgRec) bad(raw span, err error) {
	if r.badErr == nil {
		r.badKey, r.badErr = raw, err
	}
}

// top scans the whole input as a message or a batch of messages, recording
// each message in s.msgs.
func (s *scanner) top() (batch bool, err error) {
	s.ws()
	if s.eof() {
		return false, s.syntax("empty input")
	}
	switch s.data[s.pos] {
	case '{':
		s.msgs = append(s.msgs, msgRec{last: -1})
		err = s.object(1, &s.msgs[0])
	case '[':
		batch = true
		err = s.batch()
	default:
		start := s.pos
		err = s.value(0)
		s.msgs = append(s.msgs, msgRec{notObject: true, span: span{start, s.pos}})
	}
	if err != nil {
		return batch, err
	}
	s.ws()
	if !s.eof() {
		return batch, s.syntax("data after the JSON value")
	}
	return batch, nil
}

// batch scans a top-level array whose elements are messages.
func (s *scanner) batch() error {
	const depth = 1
	if depth > s.maxDepth {
		return s.fail(ErrTooDeep, fmt.Sprintf("more than %d levels", s.maxDepth))
	}
	s.pos++ // '['
	s.ws()
	if !s.eof() && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		if !s.eof() && s.data[s.pos] == '{' {
			s.msgs = append(s.msgs, msgRec{last: -1})
			if err := s.object(depth+1, &s.msgs[len(s.msgs)-1]); err != nil {
				return err
			}
		} else {
			start := s.pos
			if err := s.value(depth); err != nil {
				return err
			}
			s.msgs = append(s.msgs, msgRec{notObject: true, span: span{start, s.pos}})
		}
		s.ws()
		if s.eof() {
			return s.syntax("unterminated batch")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			return nil
		default:
			return s.syntax("expected ',' or ']' in batch")
		}
	}
}

func invalidRequest(detail string) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, detail)
}

// message checks the envelope recorded in r and fills m.
func (s *scanner) message(r *msgRec, m *Message) error {
	d := s.data
	m.Raw = d[r.span.start:r.span.end]
	if r.notObject {
		return invalidRequest("message is not a JSON object")
	}
	if r.badErr != nil {
		return fmt.Errorf("%w: envelope key %s is not allowed", r.badErr, clip(d[r.badKey.start:r.badKey.end]))
	}
	val := func(f int) []byte { return d[r.val[f].start:r.val[f].end] }

	if !r.has[fJSONRPC] {
		return invalidRequest(`missing "jsonrpc"`)
	}
	if v := val(fJSONRPC); v[0] != '"' || string(stringBytes(nil, v)) != "2.0" {
		return invalidRequest(`"jsonrpc" must be "2.0"`)
	}
	var nullID bool
	if r.has[fID] {
		v := val(fID)
		switch {
		case v[0] == 'n':
			nullID = true
		case v[0] == '"':
		default:
			if _, ok := safeInt(v); !ok {
				return invalidRequest("id must be a string or an integer between -(2^53-1) and 2^53-1")
			}
		}
		m.ID = v
	}
	if r.has[fParams] {
		v := val(fParams)
		if v[0] != '{' && v[0] != '[' {
			return invalidRequest(`"params" must be an object or an array`)
		}
		m.Params, m.params = v, v
	}

	if r.has[fMethod] {
		v := val(fMethod)
		if v[0] != '"' {
			return invalidRequest(`"method" must be a string`)
		}
		method := stringBytes(nil, v)
		if hasControl(method) {
			return invalidRequest(`"method" contains a control character`)
		}
		m.Method = internMethod(method)
		if r.has[fResult] || r.has[fError] {
			return invalidRequest("a message has either a method or a result or error")
		}
		if !r.has[fID] {
			m.Kind = KindNotification
			return nil
		}
		if nullID {
			return invalidRequest("request id must not be null")
		}
		m.Kind = KindRequest
		return nil
	}

	switch {
	case !r.has[fID]:
		return invalidRequest("message has no method and no id")
	case r.has[fParams]:
		return invalidRequest("a response has no params")
	case r.has[fResult] == r.has[fError]:
		return invalidRequest("a response has exactly one of result and error")
	case r.has[fResult]:
		if nullID {
			return invalidRequest("success response id must not be null")
		}
		m.Result = val(fResult)
		m.result = m.Result
	default:
		e, err := parseError(val(fError))
		if err != nil {
			return err
		}
		m.Error = e
	}
	m.Kind = KindResponse
	return nil
}

// parseError reads the validated JSON-RPC error object v. Members other than
// code, message and data are ignored.
func parseError(v []byte) (*Error, error) {
	if v[0] != '{' {
		return nil, invalidRequest(`"error" must be an object`)
	}
	e := new(Error)
	var haveCode, haveMessage bool
	it := newObjIter(v)
	for k, val, ok := it.next(); ok; k, val, ok = it.next() {
		switch string(k) {
		case "code":
			n, ok := safeInt(val)
			if !ok || n != int64(int32(n)) {
				return nil, invalidRequest("error code must be a 32-bit integer")
			}
			e.Code, haveCode = int(n), true
		case "message":
			if val[0] != '"' {
				return nil, invalidRequest("error message must be a string")
			}
			e.Message, haveMessage = string(stringBytes(nil, val)), true
		case "data":
			e.Data = val
		}
	}
	if !haveCode || !haveMessage {
		return nil, invalidRequest("error needs a code and a message")
	}
	return e, nil
}

// maxSafeInt is the largest integer every JSON parser (including ones that
// read numbers as IEEE doubles) represents exactly.
const maxSafeInt = 1<<53 - 1

// safeInt parses v as a JSON integer without fraction or exponent whose
// magnitude is at most maxSafeInt. "-0" is rejected because parsers echo it
// back as 0.
func safeInt(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 16 || (len(v) > 1 && v[0] == '0') {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > maxSafeInt || (neg && n == 0) {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// hasControl reports whether s holds a C0 control, DEL or a C1 control
// (U+0080..U+009F, encoded as 0xC2 0x80..0x9F).
func hasControl(s []byte) bool {
	for i, c := range s {
		if c < 0x20 || c == 0x7f || (c == 0xc2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] <= 0x9f) {
			return true
		}
	}
	return false
}

// internMethod returns method as a string, without allocating for the
// methods MCP defines.
func internMethod(method []byte) string {
	switch string(method) {
	case "initialize":
		return "initialize"
	case "ping":
		return "ping"
	case "tools/call":
		return "tools/call"
	case "tools/list":
		return "tools/list"
	case "resources/read":
		return "resources/read"
	case "resources/list":
		return "resources/list"
	case "resources/templates/list":
		return "resources/templates/list"
	case "resources/subscribe":
		return "resources/subscribe"
	case "resources/unsubscribe":
		return "resources/unsubscribe"
	case "prompts/get":
		return "prompts/get"
	case "prompts/list":
		return "prompts/list"
	case "completion/complete":
		return "completion/complete"
	case "logging/setLevel":
		return "logging/setLevel"
	case "server/discover":
		return "server/discover"
	case "subscriptions/listen":
		return "subscriptions/listen"
	case "sampling/createMessage":
		return "sampling/createMessage"
	case "elicitation/create":
		return "elicitation/create"
	case "roots/list":
		return "roots/list"
	case "notifications/initialized":
		return "notifications/initialized"
	case "notifications/cancelled":
		return "notifications/cancelled"
	case "notifications/progress":
		return "notifications/progress"
	case "notifications/message":
		return "notifications/message"
	case "notifications/tools/list_changed":
		return "notifications/tools/list_changed"
	case "notifications/resources/list_changed":
		return "notifications/resources/list_changed"
	case "notifications/resources/updated":
		return "notifications/resources/updated"
	case "notifications/prompts/list_changed":
		return "notifications/prompts/list_changed"
	case "notifications/roots/list_changed":
		return "notifications/roots/list_changed"
	}
	return string(method)
}

// IDKey returns a canonical form of the message's id for matching a
// response to its request; see the IDKey function.
func (m *Message) IDKey() string { return IDKey(m.ID) }

// IDKey returns a canonical form of a JSON-RPC id for matching responses to
// requests: "s:" and the unescaped string for a string id, "n:" and the
// digits for an integer id, "null" for null, and "" for an absent or
// invalid id. Compare ids with IDKey, never as raw bytes: an upstream that
// re-encodes "a<b" may echo it as "a\u003cb" (Go escapes <, > and &;
// Python may escape non-ASCII), and a gateway that misses the match must
// not mistake the response for an unrelated one.
func IDKey(id json.RawMessage) string {
	if len(id) == 0 || Validate(id, Limits{MaxBytes: len(id)}) != nil {
		return ""
	}
	v := trimValue(id)
	switch v[0] {
	case '"':
		return "s:" + string(stringBytes(nil, v))
	case 'n':
		return "null"
	}
	if _, ok := safeInt(v); ok {
		return "n:" + string(v)
	}
	return ""
}

// sameSlice reports whether a and b are the same bytes in memory.
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
