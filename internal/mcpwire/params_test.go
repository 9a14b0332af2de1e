package mcpwire

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func decodeOne(t *testing.T, in string) *Message {
	t.Helper()
	msgs, batch, err := Decode([]byte(in), Limits{})
	if err != nil {
		t.Fatalf("Decode(%s): %v", in, err)
	}
	if batch || len(msgs) != 1 {
		t.Fatalf("Decode(%s) = %d messages, batch %v", in, len(msgs), batch)
	}
	return &msgs[0]
}

func req(method, params string) string {
	return `{"jsonrpc":"2.0","id":7,"method":"` + method + `","params":` + params + `}`
}

func TestToolCallReadsNameArgumentsAndMeta(t *testing.T) {
	tests := []struct {
		name   string
		params string
		want   ToolCall
	}{
		{"name only", `{"name":"query"}`, ToolCall{Name: "query"}},
		{"escaped name", `{"n\u0061me":"dr\u006fp_table"}`, ToolCall{Name: "drop_table"}},
		{"arguments", `{"name":"query","arguments":{"sql":"select 1","limit":10,"opts":{"x":[true,null,"s",1.5]}}}`,
			ToolCall{Name: "query", Arguments: map[string]any{"sql": "select 1", "limit": json.Number("10"), "opts": map[string]any{"x": []any{true, nil, "s", json.Number("1.5")}}}}},
		{"escaped argument name", `{"name":"q","arguments":{"\u0073ql":"x"}}`, ToolCall{Name: "q", Arguments: map[string]any{"sql": "x"}}},
		{"empty arguments", `{"name":"q","arguments":{}}`, ToolCall{Name: "q", Arguments: map[string]any{}}},
		{"null arguments", `{"name":"q","arguments":null}`, ToolCall{Name: "q"}},
		{"meta", `{"_meta":{"progressToken":1},"name":"q"}`, ToolCall{Name: "q", Meta: json.RawMessage(`{"progressToken":1}`)}},
		{"unknown members ignored", `{"name":"q","requestState":"s","inputResponses":{}}`, ToolCall{Name: "q"}},
		{"task-augmented", `{"name":"q","task":{"ttl":1}}`, ToolCall{Name: "q"}},
		{"unicode name", `{"name":"café_\ud83d\ude00"}`, ToolCall{Name: "café_😀"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decodeOne(t, req("tools/call", tt.params))
			got, err := m.ToolCall()
			if err != nil {
				t.Fatalf("ToolCall: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ToolCall = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestToolCallRejectsSmuggledOrMalformedParams(t *testing.T) {
	tests := []struct {
		name   string
		method string
		params string
		want   error
	}{
		{"missing name", "tools/call", `{"arguments":{}}`, ErrInvalidParams},
		{"case-variant name only", "tools/call", `{"Name":"drop"}`, ErrCaseVariantKey},
		{"lone case-variant arguments", "tools/call", `{"name":"q","Arguments":{"sql":"drop table t"}}`, ErrCaseVariantKey},
		{"lone upper-case arguments", "tools/call", `{"name":"q","ARGUMENTS":{}}`, ErrCaseVariantKey},
		{"escaped case-variant arguments", "tools/call", `{"name":"q","\u0041rguments":{}}`, ErrCaseVariantKey},
		{"case-variant meta", "tools/call", `{"name":"q","_META":{}}`, ErrCaseVariantKey},
		{"number name", "tools/call", `{"name":1}`, ErrInvalidParams},
		{"object name", "tools/call", `{"name":{"x":"drop"}}`, ErrInvalidParams},
		{"array name", "tools/call", `{"name":["drop"]}`, ErrInvalidParams},
		{"null name", "tools/call", `{"name":null}`, ErrInvalidParams},
		{"empty name", "tools/call", `{"name":""}`, ErrInvalidParams},
		{"NUL in name", "tools/call", `{"name":"read\u0000drop"}`, ErrInvalidParams},
		{"newline in name", "tools/call", `{"name":"read\ndrop"}`, ErrInvalidParams},
		{"tab in name", "tools/call", `{"name":"read\tx"}`, ErrInvalidParams},
		{"DEL in name", "tools/call", `{"name":"read\u007f"}`, ErrInvalidParams},
		{"C1 control in name", "tools/call", `{"name":"read\u0085"}`, ErrInvalidParams},
		{"arguments string", "tools/call", `{"name":"q","arguments":"sql"}`, ErrInvalidParams},
		{"arguments array", "tools/call", `{"name":"q","arguments":["sql"]}`, ErrInvalidParams},
		{"meta string", "tools/call", `{"name":"q","_meta":"x"}`, ErrInvalidParams},
		{"params array", "tools/call", `["q"]`, ErrInvalidParams},
		{"wrong method", "tools/list", `{"name":"q"}`, ErrWrongMethod},
		{"case-variant method", "Tools/call", `{"name":"q"}`, ErrWrongMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := decodeOne(t, req(tt.method, tt.params))
			if _, err := m.ToolCall(); !errors.Is(err, tt.want) {
				t.Errorf("ToolCall error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestToolCallRequiresParams(t *testing.T) {
	m := decodeOne(t, `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`)
	if _, err := m.ToolCall(); !errors.Is(err, ErrInvalidParams) {
		t.Errorf("ToolCall error = %v, want ErrInvalidParams", err)
	}
}

func TestDecodeRejectsSmugglingBeforeAccessorsRun(t *testing.T) {
	// These never reach ToolCall: Decode refuses them.
	for _, params := range []string{
		`{"name":"a","Name":"b"}`,
		`{"name":"a","name":"b"}`,
		`{"name":"a","na\u006de":"b"}`,
		`{"name":"q","arguments":{"sql":"a","SQL":"b"}}`,
		`{"name":"q","arguments":{"k":"a","\u212a":"b"}}`,
	} {
		if _, _, err := Decode([]byte(req("tools/call", params)), Limits{}); err == nil {
			t.Errorf("Decode accepted params %s", params)
		}
	}
}

func TestAccessorsRevalidateHandBuiltParams(t *testing.T) {
	tests := []struct {
		name   string
		params string
		want   error
	}{
		{"duplicate", `{"name":"a","name":"b"}`, ErrDuplicateKey},
		{"case variant", `{"name":"a","NAME":"b"}`, ErrCaseVariantKey},
		{"syntax", `{"name":"a",}`, ErrSyntax},
		{"trailing data", `{"name":"a"} {}`, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Message{Kind: KindRequest, Method: "tools/call", Params: json.RawMessage(tt.params)}
			if _, err := m.ToolCall(); !errors.Is(err, tt.want) {
				t.Errorf("ToolCall error = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("replaced params are checked", func(t *testing.T) {
		m := decodeOne(t, req("tools/call", `{"name":"a"}`))
		m.Params = json.RawMessage(`{"name":"a","Name":"b"}`)
		if _, err := m.ToolCall(); !errors.Is(err, ErrCaseVariantKey) {
			t.Errorf("ToolCall error = %v, want ErrCaseVariantKey", err)
		}
	})
	t.Run("valid hand-built params with whitespace", func(t *testing.T) {
		m := &Message{Method: "tools/call", Params: json.RawMessage(" {\"name\":\"a\"} \n")}
		tc, err := m.ToolCall()
		if err != nil || tc.Name != "a" {
			t.Errorf("ToolCall = %+v, %v; want name a", tc, err)
		}
	})
}

func TestResourceURI(t *testing.T) {
	tests := []struct {
		name   string
		method string
		params string
		want   string
		err    error
	}{
		{"read", "resources/read", `{"uri":"db://public/users"}`, "db://public/users", nil},
		{"subscribe", "resources/subscribe", `{"uri":"file:///a"}`, "file:///a", nil},
		{"unsubscribe", "resources/unsubscribe", `{"uri":"file:///a","_meta":{}}`, "file:///a", nil},
		{"escaped uri", "resources/read", `{"uri":"db:\/\/private\u002fkeys"}`, "db://private/keys", nil},
		{"percent escapes kept", "resources/read", `{"uri":"db://a%2Fb"}`, "db://a%2Fb", nil},
		{"missing uri", "resources/read", `{"name":"x"}`, "", ErrInvalidParams},
		{"case-variant uri only", "resources/read", `{"URI":"db://private"}`, "", ErrCaseVariantKey},
		{"number uri", "resources/read", `{"uri":1}`, "", ErrInvalidParams},
		{"object uri", "resources/read", `{"uri":{"href":"db://x"}}`, "", ErrInvalidParams},
		{"empty uri", "resources/read", `{"uri":""}`, "", ErrInvalidParams},
		{"NUL in uri", "resources/read", `{"uri":"db://public\u0000/../private"}`, "", ErrInvalidParams},
		{"CR in uri", "resources/read", `{"uri":"db://public\r"}`, "", ErrInvalidParams},
		{"wrong method", "resources/list", `{"uri":"db://x"}`, "", ErrWrongMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOne(t, req(tt.method, tt.params)).ResourceURI()
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("ResourceURI = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestPromptGet(t *testing.T) {
	tests := []struct {
		name     string
		params   string
		wantName string
		wantArgs map[string]any
		err      error
	}{
		{"name and args", `{"name":"summarise","arguments":{"style":"short","n":"3"}}`, "summarise", map[string]any{"style": "short", "n": "3"}, nil},
		{"escaped name", `{"name":"s\u0075mmarise"}`, "summarise", nil, nil},
		{"null args", `{"name":"p","arguments":null}`, "p", nil, nil},
		{"missing name", `{"arguments":{}}`, "", nil, ErrInvalidParams},
		{"number name", `{"name":5}`, "", nil, ErrInvalidParams},
		{"control in name", `{"name":"p\u001b[31m"}`, "", nil, ErrInvalidParams},
		{"args array", `{"name":"p","arguments":[]}`, "", nil, ErrInvalidParams},
		{"lone case-variant arguments", `{"name":"p","Arguments":{"style":"long"}}`, "", nil, ErrCaseVariantKey},
		{"lone case-variant name", `{"NAME":"p"}`, "", nil, ErrCaseVariantKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, args, err := decodeOne(t, req("prompts/get", tt.params)).PromptGet()
			if !errors.Is(err, tt.err) || name != tt.wantName || !reflect.DeepEqual(args, tt.wantArgs) {
				t.Errorf("PromptGet = %q, %v, %v; want %q, %v, %v", name, args, err, tt.wantName, tt.wantArgs, tt.err)
			}
		})
	}
	if _, _, err := decodeOne(t, req("prompts/list", `{}`)).PromptGet(); !errors.Is(err, ErrWrongMethod) {
		t.Errorf("PromptGet on prompts/list = %v, want ErrWrongMethod", err)
	}
}

func TestCompletionRef(t *testing.T) {
	tests := []struct {
		name   string
		params string
		want   Ref
		err    error
	}{
		{"prompt", `{"ref":{"type":"ref/prompt","name":"code_review"},"argument":{"name":"language","value":"py"}}`, Ref{Type: "ref/prompt", Name: "code_review"}, nil},
		{"resource", `{"ref":{"type":"ref/resource","uri":"file:///{path}"},"argument":{"name":"path","value":"a"}}`, Ref{Type: "ref/resource", URI: "file:///{path}"}, nil},
		{"escaped type", `{"ref":{"type":"ref\/prompt","name":"p"}}`, Ref{Type: "ref/prompt", Name: "p"}, nil},
		{"missing ref", `{"argument":{"name":"a","value":"b"}}`, Ref{}, ErrInvalidParams},
		{"ref not object", `{"ref":"ref/prompt"}`, Ref{}, ErrInvalidParams},
		{"missing type", `{"ref":{"name":"p"}}`, Ref{}, ErrInvalidParams},
		{"unknown type", `{"ref":{"type":"ref/tool","name":"p"}}`, Ref{}, ErrInvalidParams},
		{"type case variant value", `{"ref":{"type":"ref/Prompt","name":"p"}}`, Ref{}, ErrInvalidParams},
		{"prompt without name", `{"ref":{"type":"ref/prompt"}}`, Ref{}, ErrInvalidParams},
		{"prompt with uri too", `{"ref":{"type":"ref/prompt","name":"p","uri":"file:///x"}}`, Ref{}, ErrInvalidParams},
		{"resource with name too", `{"ref":{"type":"ref/resource","uri":"file:///x","name":"p"}}`, Ref{}, ErrInvalidParams},
		{"resource without uri", `{"ref":{"type":"ref/resource"}}`, Ref{}, ErrInvalidParams},
		{"prompt name number", `{"ref":{"type":"ref/prompt","name":1}}`, Ref{}, ErrInvalidParams},
		{"prompt name with NUL", `{"ref":{"type":"ref/prompt","name":"a\u0000"}}`, Ref{}, ErrInvalidParams},
		{"case-variant ref", `{"Ref":{"type":"ref/prompt","name":"p"}}`, Ref{}, ErrCaseVariantKey},
		{"lone case-variant uri in ref", `{"ref":{"type":"ref/prompt","name":"p","Uri":"file:///secret/{p}"}}`, Ref{}, ErrCaseVariantKey},
		{"case-variant type", `{"ref":{"Type":"ref/prompt","name":"p"}}`, Ref{}, ErrCaseVariantKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOne(t, req("completion/complete", tt.params)).CompletionRef()
			if !errors.Is(err, tt.err) || got != tt.want {
				t.Errorf("CompletionRef = %+v, %v; want %+v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestProtocolVersionMeta(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
		err  error
	}{
		{"present", req("tools/call", `{"name":"q","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}`), "2026-07-28", nil},
		{"escaped key and value", req("tools/list", `{"_meta":{"io.modelcontextprotocol\/protocolVersion":"2026\u002d07-28"}}`), "2026-07-28", nil},
		{"among other meta", req("server/discover", `{"_meta":{"progressToken":"t","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{}}}`), "2026-07-28", nil},
		{"no params", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, "", nil},
		{"no meta", req("tools/list", `{}`), "", nil},
		{"meta not object", req("tools/list", `{"_meta":"x"}`), "", nil},
		{"version not string", req("tools/list", `{"_meta":{"io.modelcontextprotocol/protocolVersion":20260728}}`), "", nil},
		{"key outside meta", req("tools/list", `{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`), "", nil},
		{"params array", req("x", `["2026-07-28"]`), "", nil},
		{"lone case-variant meta", req("tools/list", `{"_Meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}`), "", ErrCaseVariantKey},
		{"lone case-variant version key", req("tools/list", `{"_meta":{"io.modelcontextprotocol/protocolversion":"2026-07-28"}}`), "", ErrCaseVariantKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOne(t, tt.in).ProtocolVersionMeta()
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Errorf("ProtocolVersionMeta = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
	hand := &Message{Params: json.RawMessage(`{"_meta":{"io.modelcontextprotocol/protocolVersion":"a","io.modelcontextprotocol/protocolVersion":"b"}}`)}
	if got, err := hand.ProtocolVersionMeta(); got != "" || err == nil {
		t.Errorf("ProtocolVersionMeta of hand-built params with duplicate key = %q, %v; want an error", got, err)
	}
}

func TestListCursor(t *testing.T) {
	tests := []struct {
		params, want string
		err          error
	}{
		{``, "", nil},
		{`{}`, "", nil},
		{`{"cursor":null}`, "", nil},
		{`{"cursor":"p\u0032"}`, "p2", nil},
		{`{"cursor":2}`, "", ErrInvalidParams},
		{`{"Cursor":"x"}`, "", ErrCaseVariantKey},
	}
	for _, tt := range tests {
		in := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
		if tt.params != "" {
			in = req("tools/list", tt.params)
		}
		got, err := decodeOne(t, in).ListCursor()
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("ListCursor(%s) = %q, %v; want %q, %v", tt.params, got, err, tt.want, tt.err)
		}
	}
}
