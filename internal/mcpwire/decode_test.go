package mcpwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// envelope wraps params into a tools/call request.
func call(params string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":` + params + `}`
}

func nest(depth int) string {
	return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
}

// manyKeys returns an object with n distinct keys; key i is
// "k" + "x"*(i%7) + 'a'+i%26 + 'a'+i/26%26 (key 1 is "kxba", key 30 "kxxeb").
func manyKeys(n int, extra string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k`)
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(string(rune('a' + i/26%26)))
		b.WriteString(`":1`)
	}
	b.WriteString(extra)
	b.WriteString("}")
	return b.String()
}

func TestDecodeRejectsEveryRuleViolation(t *testing.T) {
	tests := []struct {
		name string
		in   string
		lim  Limits
		want error
	}{
		// size and depth
		{"size over limit", call(`{"name":"q"}`), Limits{MaxBytes: 20}, ErrTooLarge},
		{"nesting over default depth", call(`{"name":"q","arguments":` + nest(70) + `}`), Limits{}, ErrTooDeep},
		{"array bomb", strings.Repeat("[", 1<<20), Limits{MaxBytes: 2 << 20}, ErrTooDeep},
		{"object bomb inside message", `{"jsonrpc":"2.0","method":"x","params":` + strings.Repeat(`{"a":`, 100000), Limits{}, ErrTooDeep},
		{"depth limit is configurable", call(`{"name":"q","arguments":{"a":{"b":1}}}`), Limits{MaxDepth: 3}, ErrTooDeep},

		// UTF-8
		{"raw invalid byte in string", call("{\"name\":\"q\xff\"}"), Limits{}, ErrInvalidUTF8},
		{"overlong encoding", call("{\"name\":\"\xc0\xaf\"}"), Limits{}, ErrInvalidUTF8},
		{"UTF-8 encoded surrogate", call("{\"name\":\"\xed\xa0\x80\"}"), Limits{}, ErrInvalidUTF8},
		{"truncated sequence", call("{\"name\":\"\xe2\x82\"}"), Limits{}, ErrInvalidUTF8},
		{"invalid UTF-8 in key", call("{\"na\xffme\":\"q\",\"name\":\"r\"}"), Limits{}, ErrInvalidUTF8},
		{"lone high surrogate escape", call(`{"name":"\ud800"}`), Limits{}, ErrInvalidUTF8},
		{"lone low surrogate escape", call(`{"name":"\udc00x"}`), Limits{}, ErrInvalidUTF8},
		{"high surrogate then non-surrogate", call(`{"name":"\ud800\u0041"}`), Limits{}, ErrInvalidUTF8},
		{"high surrogate then text", call(`{"name":"\ud800abcdefgh"}`), Limits{}, ErrInvalidUTF8},
		{"two high surrogates", call(`{"name":"\ud800\ud800"}`), Limits{}, ErrInvalidUTF8},
		{"lone surrogate in key", call(`{"name":"q","\udfff":1}`), Limits{}, ErrInvalidUTF8},

		// grammar
		{"empty input", ``, Limits{}, ErrSyntax},
		{"only whitespace", " \n\t", Limits{}, ErrSyntax},
		{"trailing comma in object", call(`{"name":"q",}`), Limits{}, ErrSyntax},
		{"trailing comma in array", call(`{"name":"q","arguments":{"a":[1,2,]}}`), Limits{}, ErrSyntax},
		{"line comment", `{"jsonrpc":"2.0", // hi` + "\n" + `"method":"x"}`, Limits{}, ErrSyntax},
		{"block comment", `{"jsonrpc":"2.0",/* hi */"method":"x"}`, Limits{}, ErrSyntax},
		{"NaN", call(`{"name":"q","arguments":{"a":NaN}}`), Limits{}, ErrSyntax},
		{"Infinity", call(`{"name":"q","arguments":{"a":-Infinity}}`), Limits{}, ErrSyntax},
		{"single quotes", `{'jsonrpc':'2.0'}`, Limits{}, ErrSyntax},
		{"unquoted key", `{jsonrpc:"2.0"}`, Limits{}, ErrSyntax},
		{"leading zero", `{"jsonrpc":"2.0","id":01,"method":"x"}`, Limits{}, ErrSyntax},
		{"leading plus", `{"jsonrpc":"2.0","id":+1,"method":"x"}`, Limits{}, ErrSyntax},
		{"bare fraction dot", `{"jsonrpc":"2.0","id":1.,"method":"x"}`, Limits{}, ErrSyntax},
		{"leading dot", `{"jsonrpc":"2.0","id":.5,"method":"x"}`, Limits{}, ErrSyntax},
		{"empty exponent", `{"jsonrpc":"2.0","id":1e,"method":"x"}`, Limits{}, ErrSyntax},
		{"lone minus", `{"jsonrpc":"2.0","id":-,"method":"x"}`, Limits{}, ErrSyntax},
		{"hex number", `{"jsonrpc":"2.0","id":0x10,"method":"x"}`, Limits{}, ErrSyntax},
		{"trailing garbage", `{"jsonrpc":"2.0","method":"x"} x`, Limits{}, ErrSyntax},
		{"two values", `{"jsonrpc":"2.0","method":"x"}{"jsonrpc":"2.0","method":"y"}`, Limits{}, ErrSyntax},
		{"NUL after value", "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\x00", Limits{}, ErrSyntax},
		{"byte order mark", "\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"method\":\"x\"}", Limits{}, ErrSyntax},
		{"unterminated string", `{"jsonrpc":"2.0","method":"x`, Limits{}, ErrSyntax},
		{"unterminated object", `{"jsonrpc":"2.0","method":"x"`, Limits{}, ErrSyntax},
		{"raw newline in string", "{\"jsonrpc\":\"2.0\",\"method\":\"x\ny\"}", Limits{}, ErrSyntax},
		{"raw NUL in string", "{\"jsonrpc\":\"2.0\",\"method\":\"x\x00\"}", Limits{}, ErrSyntax},
		{"invalid escape", `{"jsonrpc":"2.0","method":"\x41"}`, Limits{}, ErrSyntax},
		{"short unicode escape", `{"jsonrpc":"2.0","method":"\u12"}`, Limits{}, ErrSyntax},
		{"non-hex unicode escape", `{"jsonrpc":"2.0","method":"\u12g4"}`, Limits{}, ErrSyntax},
		{"missing colon", `{"jsonrpc" "2.0"}`, Limits{}, ErrSyntax},
		{"missing comma", `{"jsonrpc":"2.0" "method":"x"}`, Limits{}, ErrSyntax},
		{"truncated literal", call(`{"name":"q","arguments":{"a":tru}}`), Limits{}, ErrSyntax},
		{"capitalised literal", call(`{"name":"q","arguments":{"a":True}}`), Limits{}, ErrSyntax},
		{"non-breaking space as whitespace", "{\u00a0\"jsonrpc\":\"2.0\",\"method\":\"x\"}", Limits{}, ErrSyntax},

		// duplicate keys, any depth, compared after unescaping
		{"duplicate envelope key", `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}`, Limits{}, ErrDuplicateKey},
		{"duplicate params name", call(`{"name":"read","name":"drop"}`), Limits{}, ErrDuplicateKey},
		{"duplicate tool argument", call(`{"name":"q","arguments":{"sql":"select","sql":"delete"}}`), Limits{}, ErrDuplicateKey},
		{"duplicate at depth 6", call(`{"name":"q","arguments":{"a":{"b":[{"c":{"d":1,"d":2}}]}}}`), Limits{}, ErrDuplicateKey},
		{"escaped duplicate", call(`{"name":"read","na\u006de":"drop"}`), Limits{}, ErrDuplicateKey},
		{"fully escaped duplicate", call(`{"name":"read","\u006e\u0061\u006d\u0065":"drop"}`), Limits{}, ErrDuplicateKey},
		{"escaped slash duplicate", call(`{"name":"q","arguments":{"a/b":1,"a\/b":2}}`), Limits{}, ErrDuplicateKey},
		{"escaped envelope duplicate", `{"jsonrpc":"2.0","id":1,"method":"a","m\u0065thod":"b"}`, Limits{}, ErrDuplicateKey},
		{"duplicate of early key in big object", call(`{"name":"q","arguments":` + manyKeys(40, `,"kxba":2`) + `}`), Limits{}, ErrDuplicateKey},
		{"duplicate of late key in big object", call(`{"name":"q","arguments":` + manyKeys(40, `,"kxxeb":2`) + `}`), Limits{}, ErrDuplicateKey},
		{"duplicate empty key", call(`{"name":"q","arguments":{"":1,"":2}}`), Limits{}, ErrDuplicateKey},
		{"duplicate in error data", `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","data":{"x":1,"x":2}}}`, Limits{}, ErrDuplicateKey},

		// case-variant keys, any depth
		{"case-variant params name", call(`{"name":"read","Name":"drop"}`), Limits{}, ErrCaseVariantKey},
		{"upper-case variant first", call(`{"NAME":"drop","name":"read"}`), Limits{}, ErrCaseVariantKey},
		{"case-variant tool argument", call(`{"name":"q","arguments":{"sql":"select","SQL":"delete"}}`), Limits{}, ErrCaseVariantKey},
		{"Kelvin sign variant", call(`{"name":"q","arguments":{"kind":"a","\u212aind":"b"}}`), Limits{}, ErrCaseVariantKey},
		{"raw Kelvin sign variant", call("{\"name\":\"q\",\"arguments\":{\"Kind\":\"a\",\"\u212aind\":\"b\"}}"), Limits{}, ErrCaseVariantKey},
		{"long s variant", call(`{"name":"q","arguments":{"sql":"a","\u017fql":"b"}}`), Limits{}, ErrCaseVariantKey},
		{"duplicate after another member", call("{\"name\":\"q\",\"arguments\":{},\"name\":\"r\"}"), Limits{}, ErrDuplicateKey},
		{"non-ASCII case variant", call(`{"name":"q","arguments":{"straße":1,"STRAßE":2}}`), Limits{}, ErrCaseVariantKey},
		{"Greek sigma variants", call(`{"name":"q","arguments":{"σ":1,"ς":2}}`), Limits{}, ErrCaseVariantKey},
		{"case variant at depth", call(`{"name":"q","arguments":{"a":[{"b":{"Id":1,"iD":2}}]}}`), Limits{}, ErrCaseVariantKey},
		{"case variant of early key in big object", call(`{"name":"q","arguments":` + manyKeys(40, `,"KXBA":2`) + `}`), Limits{}, ErrCaseVariantKey},
		{"case variant of late key in big object", call(`{"name":"q","arguments":` + manyKeys(40, `,"\u212aXXEB":2`) + `}`), Limits{}, ErrCaseVariantKey},
		{"case variant of ref name", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","nAme":"b"}}}`, Limits{}, ErrCaseVariantKey},
		{"envelope Method alone", `{"jsonrpc":"2.0","id":1,"Method":"tools/call"}`, Limits{}, ErrCaseVariantKey},
		{"envelope ID alone", `{"jsonrpc":"2.0","ID":1,"method":"tools/call"}`, Limits{}, ErrCaseVariantKey},
		{"envelope Kelvin-free variant of params", `{"jsonrpc":"2.0","method":"x","PARAMS":{}}`, Limits{}, ErrCaseVariantKey},
		{"envelope long s variant", `{"jsonrpc":"2.0","id":1,"method":"x","param\u017f":{}}`, Limits{}, ErrCaseVariantKey},
		{"envelope method and Method", `{"jsonrpc":"2.0","id":1,"method":"a","Method":"b"}`, Limits{}, ErrCaseVariantKey},

		// control characters in keys
		{"escaped NUL in key", call(`{"name":"read","name\u0000":"drop"}`), Limits{}, ErrInvalidKey},
		{"escaped NUL in argument key", call(`{"name":"q","arguments":{"sql\u0000x":"a"}}`), Limits{}, ErrInvalidKey},
		{"escaped newline in nested key", call(`{"name":"q","arguments":{"a":{"b\nc":1}}}`), Limits{}, ErrInvalidKey},
		{"raw DEL in key", call("{\"name\":\"q\",\"arguments\":{\"a\x7f\":1}}"), Limits{}, ErrInvalidKey},
		{"escaped NUL in envelope key", `{"jsonrpc":"2.0","id":1,"method":"x","method\u0000":"y"}`, Limits{}, ErrInvalidKey},

		// envelope
		{"top-level number", `42`, Limits{}, ErrInvalidRequest},
		{"top-level string", `"tools/call"`, Limits{}, ErrInvalidRequest},
		{"top-level null", `null`, Limits{}, ErrInvalidRequest},
		{"missing jsonrpc", `{"id":1,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"jsonrpc 1.0", `{"jsonrpc":"1.0","id":1,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"jsonrpc number", `{"jsonrpc":2.0,"id":1,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"jsonrpc with space", `{"jsonrpc":"2.0 ","id":1,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"unknown envelope key", `{"jsonrpc":"2.0","id":1,"method":"x","extra":1}`, Limits{}, ErrInvalidRequest},
		{"fractional id", `{"jsonrpc":"2.0","id":1.5,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"integral fraction id", `{"jsonrpc":"2.0","id":1.0,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"exponent id", `{"jsonrpc":"2.0","id":1e3,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"negative zero id", `{"jsonrpc":"2.0","id":-0,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"id above 2^53-1", `{"jsonrpc":"2.0","id":9007199254740992,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"id huge", `{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"boolean id", `{"jsonrpc":"2.0","id":true,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"object id", `{"jsonrpc":"2.0","id":{},"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"array id", `{"jsonrpc":"2.0","id":[1],"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"null id on request", `{"jsonrpc":"2.0","id":null,"method":"x"}`, Limits{}, ErrInvalidRequest},
		{"null id on success response", `{"jsonrpc":"2.0","id":null,"result":{}}`, Limits{}, ErrInvalidRequest},
		{"method number", `{"jsonrpc":"2.0","id":1,"method":1}`, Limits{}, ErrInvalidRequest},
		{"method null", `{"jsonrpc":"2.0","id":1,"method":null}`, Limits{}, ErrInvalidRequest},
		{"method with escaped NUL", `{"jsonrpc":"2.0","id":1,"method":"tools/call\u0000"}`, Limits{}, ErrInvalidRequest},
		{"method with escaped newline", `{"jsonrpc":"2.0","id":1,"method":"tools/call\n"}`, Limits{}, ErrInvalidRequest},
		{"params string", `{"jsonrpc":"2.0","id":1,"method":"x","params":"a"}`, Limits{}, ErrInvalidRequest},
		{"params null", `{"jsonrpc":"2.0","id":1,"method":"x","params":null}`, Limits{}, ErrInvalidRequest},
		{"params number", `{"jsonrpc":"2.0","id":1,"method":"x","params":3}`, Limits{}, ErrInvalidRequest},
		{"request with result", `{"jsonrpc":"2.0","id":1,"method":"x","result":{}}`, Limits{}, ErrInvalidRequest},
		{"notification with error", `{"jsonrpc":"2.0","method":"x","error":{"code":1,"message":"m"}}`, Limits{}, ErrInvalidRequest},
		{"response with result and error", `{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}`, Limits{}, ErrInvalidRequest},
		{"response with neither", `{"jsonrpc":"2.0","id":1}`, Limits{}, ErrInvalidRequest},
		{"response without id", `{"jsonrpc":"2.0","result":{}}`, Limits{}, ErrInvalidRequest},
		{"response with params", `{"jsonrpc":"2.0","id":1,"result":{},"params":{}}`, Limits{}, ErrInvalidRequest},
		{"error not object", `{"jsonrpc":"2.0","id":1,"error":"boom"}`, Limits{}, ErrInvalidRequest},
		{"error without code", `{"jsonrpc":"2.0","id":1,"error":{"message":"m"}}`, Limits{}, ErrInvalidRequest},
		{"error without message", `{"jsonrpc":"2.0","id":1,"error":{"code":1}}`, Limits{}, ErrInvalidRequest},
		{"error fractional code", `{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}`, Limits{}, ErrInvalidRequest},
		{"error code out of int32", `{"jsonrpc":"2.0","id":1,"error":{"code":4294967296,"message":"m"}}`, Limits{}, ErrInvalidRequest},
		{"empty object", `{}`, Limits{}, ErrInvalidRequest},

		// batches
		{"empty batch", `[]`, Limits{}, ErrInvalidRequest},
		{"empty batch with spaces", ` [ ] `, Limits{}, ErrInvalidRequest},
		{"batch with number", `[{"jsonrpc":"2.0","method":"x"},1]`, Limits{}, ErrInvalidRequest},
		{"nested batch", `[[{"jsonrpc":"2.0","method":"x"}]]`, Limits{}, ErrInvalidRequest},
		{"batch valid then invalid", `[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"1.0","id":2,"method":"y"}]`, Limits{}, ErrInvalidRequest},
		{"batch valid then duplicate", `[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"2.0","id":2,"id":3,"method":"y"}]`, Limits{}, ErrDuplicateKey},
		{"batch valid then case variant", `[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"2.0","Id":2,"method":"y"}]`, Limits{}, ErrCaseVariantKey},
		{"batch trailing comma", `[{"jsonrpc":"2.0","method":"x"},]`, Limits{}, ErrSyntax},
		{"batch depth counts the array", `[{"jsonrpc":"2.0","method":"x","params":{"a":1}}]`, Limits{MaxDepth: 2}, ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, _, err := Decode([]byte(tt.in), tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode error = %v, want %v", err, tt.want)
			}
			if msgs != nil {
				t.Errorf("Decode returned %d messages with an error", len(msgs))
			}
		})
	}
}

func TestDecodeAcceptsValidMessages(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		kind   Kind
		id     string
		method string
		params string
		result string
		err    *Error
	}{
		{"request", call(`{"name":"q"}`), KindRequest, `1`, "tools/call", `{"name":"q"}`, "", nil},
		{"string id", `{"jsonrpc":"2.0","id":"a-1","method":"ping"}`, KindRequest, `"a-1"`, "ping", "", "", nil},
		{"escaped string id kept as bytes", `{"jsonrpc":"2.0","id":"\u0061","method":"ping"}`, KindRequest, `"\u0061"`, "ping", "", "", nil},
		{"negative id", `{"jsonrpc":"2.0","id":-7,"method":"ping"}`, KindRequest, `-7`, "ping", "", "", nil},
		{"zero id", `{"jsonrpc":"2.0","id":0,"method":"ping"}`, KindRequest, `0`, "ping", "", "", nil},
		{"largest safe id", `{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"}`, KindRequest, `9007199254740991`, "ping", "", "", nil},
		{"smallest safe id", `{"jsonrpc":"2.0","id":-9007199254740991,"method":"ping"}`, KindRequest, `-9007199254740991`, "ping", "", "", nil},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, KindNotification, "", "notifications/initialized", "", "", nil},
		{"notification with params", `{"method":"notifications/progress","params":{"progress":1},"jsonrpc":"2.0"}`, KindNotification, "", "notifications/progress", `{"progress":1}`, "", nil},
		{"params array", `{"jsonrpc":"2.0","id":2,"method":"x","params":[1,2]}`, KindRequest, `2`, "x", `[1,2]`, "", nil},
		{"escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"q"}}`, KindRequest, `1`, "tools/call", `{"name":"q"}`, "", nil},
		{"escaped slash method", `{"jsonrpc":"2.0","id":1,"method":"tools\/call"}`, KindRequest, `1`, "tools/call", "", "", nil},
		{"escaped jsonrpc version", `{"jsonrpc":"2\u002e0","id":1,"method":"ping"}`, KindRequest, `1`, "ping", "", "", nil},
		{"escaped envelope key", `{"jsonrpc":"2.0","\u0069d":1,"method":"ping"}`, KindRequest, `1`, "ping", "", "", nil},
		{"unknown method kept", `{"jsonrpc":"2.0","id":1,"method":"vendor/thing"}`, KindRequest, `1`, "vendor/thing", "", "", nil},
		{"whitespace everywhere", " \r\n\t{ \"jsonrpc\" : \"2.0\" , \"id\" : 3 , \"method\" : \"ping\" } \n", KindRequest, `3`, "ping", "", "", nil},
		{"success response", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`, KindResponse, `1`, "", "", `{"tools":[]}`, nil},
		{"null result", `{"jsonrpc":"2.0","id":1,"result":null}`, KindResponse, `1`, "", "", `null`, nil},
		{"error response", `{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"no \"such\" method","data":{"a":1}}}`, KindResponse, `"x"`, "", "", "", &Error{Code: -32601, Message: `no "such" method`, Data: json.RawMessage(`{"a":1}`)}},
		{"error response with null id", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}`, KindResponse, `null`, "", "", "", &Error{Code: -32700, Message: "parse"}},
		{"error with extra member", `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m","hint":"x"}}`, KindResponse, `1`, "", "", "", &Error{Code: 1, Message: "m"}},
		{"surrogate pair and unicode", call(`{"name":"q","arguments":{"s":"\ud83d\ude00 é ✓ 😀"}}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":{"s":"\ud83d\ude00 é ✓ 😀"}}`, "", nil},
		{"escaped NUL in argument value", call(`{"name":"q","arguments":{"s":"a\u0000b"}}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":{"s":"a\u0000b"}}`, "", nil},
		{"numbers", call(`{"name":"q","arguments":{"a":-0.5e-10,"b":0,"c":1E+2,"d":123456789012345678901234567890}}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":{"a":-0.5e-10,"b":0,"c":1E+2,"d":123456789012345678901234567890}}`, "", nil},
		{"keys that only look alike", call(`{"name":"q","arguments":{"a":1,"b":1,"a_":1,"ab":1,"é":1,"e":1}}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":{"a":1,"b":1,"a_":1,"ab":1,"é":1,"e":1}}`, "", nil},
		{"big object without clashes", call(`{"name":"q","arguments":` + manyKeys(200, "") + `}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":` + manyKeys(200, "") + `}`, "", nil},
		{"same keys in sibling big objects", call(`{"name":"q","arguments":{"a":` + manyKeys(40, "") + `,"b":` + manyKeys(40, "") + `}}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":{"a":` + manyKeys(40, "") + `,"b":` + manyKeys(40, "") + `}}`, "", nil},
		{"big object nested in big object", call(`{"name":"q","arguments":` + manyKeys(20, `,"inner":`+manyKeys(30, "")) + `}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":` + manyKeys(20, `,"inner":`+manyKeys(30, "")) + `}`, "", nil},
		{"same key in sibling objects", call(`{"name":"q","arguments":{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}}`, "", nil},
		{"depth exactly at limit", call(`{"name":"q","arguments":` + nest(61) + `}`), KindRequest, `1`, "tools/call", `{"name":"q","arguments":` + nest(61) + `}`, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, batch, err := Decode([]byte(tt.in), Limits{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if batch || len(msgs) != 1 {
				t.Fatalf("Decode = %d messages, batch %v; want 1, false", len(msgs), batch)
			}
			m := msgs[0]
			if m.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v", m.Kind, tt.kind)
			}
			if string(m.ID) != tt.id || (tt.id == "") != (m.ID == nil) {
				t.Errorf("ID = %q, want %q", m.ID, tt.id)
			}
			if m.Method != tt.method {
				t.Errorf("Method = %q, want %q", m.Method, tt.method)
			}
			if string(m.Params) != tt.params || (tt.params == "") != (m.Params == nil) {
				t.Errorf("Params = %q, want %q", m.Params, tt.params)
			}
			if string(m.Result) != tt.result {
				t.Errorf("Result = %q, want %q", m.Result, tt.result)
			}
			switch {
			case (m.Error == nil) != (tt.err == nil):
				t.Errorf("Error = %+v, want %+v", m.Error, tt.err)
			case m.Error != nil && (m.Error.Code != tt.err.Code || m.Error.Message != tt.err.Message || string(m.Error.Data) != string(tt.err.Data)):
				t.Errorf("Error = %+v, want %+v", *m.Error, *tt.err)
			}
			if want := strings.Trim(tt.in, " \r\n\t"); string(m.Raw) != want {
				t.Errorf("Raw = %q, want %q", m.Raw, want)
			}
		})
	}
}

func TestDecodeUnescapesMethod(t *testing.T) {
	msgs, _, err := Decode([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"q"}}`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := msgs[0].Method; got != "tools/call" {
		t.Fatalf(`Method = %q, want "tools/call"`, got)
	}
}

func TestDecodeBatchKeepsEachMessageRaw(t *testing.T) {
	elems := []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		`{ "jsonrpc" : "2.0", "method" : "notifications/initialized" }`,
		`{"jsonrpc":"2.0","id":"r","result":{}}`,
	}
	in := "[ " + strings.Join(elems, " ,\n") + " ]"
	msgs, batch, err := Decode([]byte(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !batch {
		t.Fatal("batch = false, want true")
	}
	wantKinds := []Kind{KindRequest, KindNotification, KindResponse}
	if len(msgs) != len(elems) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(elems))
	}
	for i, m := range msgs {
		if string(m.Raw) != elems[i] {
			t.Errorf("msgs[%d].Raw = %q, want %q", i, m.Raw, elems[i])
		}
		if m.Kind != wantKinds[i] {
			t.Errorf("msgs[%d].Kind = %v, want %v", i, m.Kind, wantKinds[i])
		}
	}
}

func TestDecodeRejectsWholeBatchAndNamesElement(t *testing.T) {
	in := `[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"2.0","id":2,"method":"y"},{"jsonrpc":"2.0","id":1.5,"method":"z"}]`
	msgs, batch, err := Decode([]byte(in), Limits{})
	if !errors.Is(err, ErrInvalidRequest) || !batch || msgs != nil {
		t.Fatalf("Decode = %v, %v, %v; want nil, true, ErrInvalidRequest", msgs, batch, err)
	}
	if !strings.Contains(err.Error(), "element 2") {
		t.Errorf("error %q does not name element 2", err)
	}
}

func TestDecodeDoesNotModifyOrCopyInput(t *testing.T) {
	in := []byte(call(`{"name":"q","arguments":{"a":[1,{"b":"\u0041"}]}}`))
	orig := bytes.Clone(in)
	msgs, _, err := Decode(in, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, orig) {
		t.Fatal("Decode modified its input")
	}
	if !sameSlice(msgs[0].Raw, in) {
		t.Error("Raw does not alias the input")
	}
}

func TestDecodeIsSafeForConcurrentUse(t *testing.T) {
	inputs := []string{
		call(`{"name":"q","arguments":` + manyKeys(50, "") + `}`),
		call(`{"name":"a","Name":"b"}`),
		`[{"jsonrpc":"2.0","id":1,"method":"x"},{"jsonrpc":"2.0","method":"y"}]`,
	}
	done := make(chan error)
	for g := range 4 {
		go func() {
			var err error
			for i := range 200 {
				in := inputs[(g+i)%len(inputs)]
				_, _, derr := Decode([]byte(in), Limits{})
				if wantErr := strings.Contains(in, `"Name"`); (derr != nil) != wantErr {
					err = derr
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestErrorCodeMapsSentinels(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{ErrSyntax, CodeParseError},
		{ErrInvalidUTF8, CodeParseError},
		{ErrTooLarge, CodeInvalidRequest},
		{ErrTooDeep, CodeInvalidRequest},
		{ErrDuplicateKey, CodeInvalidRequest},
		{ErrCaseVariantKey, CodeInvalidRequest},
		{ErrInvalidKey, CodeInvalidRequest},
		{ErrInvalidRequest, CodeInvalidRequest},
		{ErrInvalidParams, CodeInvalidParams},
		{ErrWrongMethod, CodeInvalidParams},
		{errors.New("other"), CodeInternalError},
		{nil, CodeInternalError},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
		if tt.err != nil {
			wrapped := errors.Join(errors.New("ctx"), tt.err)
			if got := ErrorCode(wrapped); got != tt.want {
				t.Errorf("ErrorCode(wrapped %v) = %d, want %d", tt.err, got, tt.want)
			}
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindInvalid: "invalid", KindRequest: "request", KindNotification: "notification", KindResponse: "response", Kind(9): "invalid"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestIDKeyMatchesReencodedIDs(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{`"a<b"`, `"a\u003cb"`, true},
		{`"é"`, `"\u00e9"`, true},
		{`"x/y"`, `"x\/y"`, true},
		{`7`, `7`, true},
		{`7`, `"7"`, false},
		{`-3`, `-3`, true},
		{`"a"`, `"A"`, false},
	}
	for _, tt := range tests {
		ka, kb := IDKey(json.RawMessage(tt.a)), IDKey(json.RawMessage(tt.b))
		if ka == "" || kb == "" || (ka == kb) != tt.same {
			t.Errorf("IDKey(%s) = %q, IDKey(%s) = %q; want same: %v", tt.a, ka, tt.b, kb, tt.same)
		}
	}
	for _, bad := range []string{``, `1.5`, `{}`, `"\ud800"`, `1 2`, `true`} {
		if k := IDKey(json.RawMessage(bad)); k != "" {
			t.Errorf("IDKey(%s) = %q, want empty", bad, k)
		}
	}
	if k := IDKey(json.RawMessage(`null`)); k != "null" {
		t.Errorf("IDKey(null) = %q", k)
	}
	m := decodeOne(t, `{"jsonrpc":"2.0","id":"r\u0031","method":"ping"}`)
	if k := m.IDKey(); k != "s:r1" {
		t.Errorf("Message.IDKey = %q, want s:r1", k)
	}
}
