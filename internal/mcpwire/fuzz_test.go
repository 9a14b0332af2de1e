package mcpwire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var decodeSeeds = []string{
	call(`{"name":"q","requestState":"agentmesh-hold-1","inputResponses":{"agentmesh-hold-1":{"action":"accept"}},"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}`),
	call(` { "inputResponses" : null , "name":"q" , "requestState":"s" } `),
	call(`{"name":"query","arguments":{"sql":"select 1","n":[1,2.5,{"x":null}]}}`),
	call(`{"name":"a","Name":"b"}`),
	call(`{"name":"a","na\u006de":"b"}`),
	call(`{"name":"q","arguments":{"kind":1,"\u212aind":2}}`),
	call(`{"name":"q","arguments":{"sql":1,"\u017fql":2}}`),
	call(`{"name":"\ud83d\ude00\u0041"}`),
	call(`{"name":"\ud800"}`),
	call(`{"name":"a","name\u0000":"b"}`),
	call("{\"name\":\"\xff\"}"),
	`{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"q"}}`,
	`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
	`{"jsonrpc":"2.0","id":"x","result":{"tools":[{"name":"a"}]}}`,
	`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"m","data":[1]}}`,
	`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"b"}]`,
	`[]`,
	`{"jsonrpc":"2.0","id":1.0,"method":"x"}`,
	`{"jsonrpc":"2.0","ID":1,"method":"x"}`,
	`{"jsonrpc":"2.0","id":1,"method":"x",}`,
	`{"jsonrpc":"2.0","id":1,"method":"x"} {}`,
	`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"db://x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"URI":"db://private"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1","inputResponses":{"k":{"action":"accept"}}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tasks/update","params":{"TaskId":"t-1"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a"]}}}`,
	call(`{"name":"q","task":{"ttl":1},"_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}}`),
	`{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"a","status":"working"}}}`,
	`{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"b"}}`,
	`{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"a"}]}}`,
	strings.Repeat("[", 100),
	call(`{"name":"q","arguments":` + manyKeys(20, "") + `}`),
}

// FuzzDecode checks that Decode never panics and that whatever it accepts,
// encoding/json also accepts and reads the same method, tool name and
// arguments.
func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, batch, err := Decode(data, Limits{MaxDepth: 32})
		if err != nil {
			if msgs != nil {
				t.Fatalf("messages returned with error %v", err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("Decode accepted what encoding/json calls invalid: %q", data)
		}
		if !batch && len(msgs) != 1 {
			t.Fatalf("non-batch gave %d messages", len(msgs))
		}
		for i := range msgs {
			m := &msgs[i]
			checkAgainstStd(t, m)
			again, _, err := Decode(m.Raw, Limits{MaxDepth: 32})
			if err != nil || again[0].Method != m.Method || again[0].Kind != m.Kind || !bytes.Equal(again[0].ID, m.ID) {
				t.Fatalf("re-decoding Raw %q: %v", m.Raw, err)
			}
			// The accessors must not panic on anything Decode accepts, and
			// what they read is what a decoder that binds keys
			// case-insensitively (encoding/json into a struct) reads.
			m.ToolCall()
			if uri, err := m.ResourceURI(); err == nil {
				checkFoldBinding(t, m, "uri", uri)
			}
			m.PromptGet()
			m.CompletionRef()
			m.ProtocolVersionMeta()
			m.TaskRequest()
			if id, err := m.TaskID(); err == nil {
				checkFoldBinding(t, m, "taskId", id)
			}
			m.Listen()
			m.CreatedTaskID()
			m.DeclaresElicitation()
			m.ListCursor()
			if in, err := m.InputRetry(); err == nil && !batch {
				// What the gateway forwards after taking a retry of its own
				// is still one valid message with nothing of the retry left.
				out, err := WithoutInputRetry(m.Raw)
				if err != nil {
					t.Fatalf("WithoutInputRetry(%q): %v", m.Raw, err)
				}
				again, _, err := Decode(out, Limits{MaxDepth: 32})
				if err != nil || again[0].Method != m.Method || !bytes.Equal(again[0].ID, m.ID) {
					t.Fatalf("WithoutInputRetry(%q) = %q: %v", m.Raw, out, err)
				}
				if left, err := again[0].InputRetry(); err != nil || left.State != "" || left.Responses != nil {
					t.Fatalf("WithoutInputRetry(%q) = %q left %+v, %v (had %+v)", m.Raw, out, left, err, in)
				}
			}
			if m.ResultHas("tools") {
				m.FilterResult("tools", func(n string) bool { return len(n)%2 == 0 })
			}
			if m.Result != nil && m.Result[0] == '{' {
				FilterList(m.Result, "tools", func(string) bool { return true })
			}
		}
	})
}

// FuzzFilterList checks that FilterList never panics and that its output is
// strictly valid, keeps exactly the items keep allowed (by the name
// encoding/json reads) and leaves every other member unchanged.
func FuzzFilterList(f *testing.F) {
	seeds := []string{
		`{"tools":[{"name":"a","x":1},{"name":"bb"},{"name":"ccc","inputSchema":{}}],"nextCursor":"n","_meta":{}}`,
		`{"tools":[{"name":"a","Name":"bb"},{"name":"a","name":"bb"},"x",null,{"nam\u0065":"dd"}]}`,
		`{"tools":[],"tools":[]}`,
		`{"tools":{"name":"a"}}`,
		`{"tools":[{"name":"\ud800"}]}`,
		` {"nextCursor":"c","tools":[ {"name":"a"} , {"name":"bb"} ]} `,
	}
	for i, s := range seeds {
		f.Add([]byte(s), byte(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, sel byte) {
		keep := func(name string) bool { return (len(name)+int(sel))%2 == 0 }
		out, kept, err := FilterList(data, "tools", keep)
		if err != nil {
			return
		}
		if err := Validate(out, Limits{MaxBytes: len(out)}); err != nil {
			t.Fatalf("output %q invalid: %v", out, err)
		}
		var in, got map[string]json.RawMessage
		if err := json.Unmarshal(data, &in); err != nil {
			t.Fatalf("encoding/json rejects accepted input %q: %v", data, err)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("encoding/json rejects output %q: %v", out, err)
		}
		if len(in) != len(got) {
			t.Fatalf("members changed: %q -> %q", data, out)
		}
		for k, v := range in {
			if k != "tools" && !bytes.Equal(v, got[k]) {
				t.Fatalf("member %q changed: %s -> %s", k, v, got[k])
			}
		}
		var items []map[string]any
		if err := json.Unmarshal(got["tools"], &items); err != nil {
			t.Fatalf("output tools %s: %v", got["tools"], err)
		}
		if len(items) != len(kept) {
			t.Fatalf("%d items but %d kept names", len(items), len(kept))
		}
		for i, item := range items {
			if item["name"] != kept[i] || !keep(kept[i]) {
				t.Fatalf("item %d name %v, kept %q", i, item["name"], kept[i])
			}
		}
	})
}

// checkFoldBinding fails t unless the params of m hold exactly one key that
// strings.EqualFold matches with key, spelled exactly key, whose value is
// the string want: then a decoder that binds keys case-insensitively reads
// what the accessor read.
func checkFoldBinding(t *testing.T, m *Message, key, want string) {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(m.Params, &p); err != nil {
		t.Fatalf("encoding/json rejects accepted params %q: %v", m.Params, err)
	}
	n := 0
	for k, v := range p {
		if !strings.EqualFold(k, key) {
			continue
		}
		n++
		if k != key || v != want {
			t.Fatalf("%s: accessor read %q, but a case-insensitive decoder binds %q: %v (params %q)", key, want, k, v, m.Params)
		}
	}
	if n != 1 {
		t.Fatalf("%s: %d keys fold to it (params %q)", key, n, m.Params)
	}
}

// FuzzFold checks the key fold that every case-variant check uses against
// strings.EqualFold, the equivalence encoding/json binds keys with: for
// valid UTF-8, Fold(a) == Fold(b) and KeyIs's near miss exactly when
// EqualFold says the keys are one.
func FuzzFold(f *testing.F) {
	for _, p := range [][2]string{{"name", "Name"}, {"kind", "\u212aind"}, {"sql", "\u017fql"}, {"σ", "ς"}, {"ǅ", "ǆ"},
		{"arguments", "ARGUMENTS"}, {"straße", "STRASSE"}, {"a", "b"}, {"", ""}, {"x\xff", "X\xff"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		same, err := KeyIs(a, b)
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		eq := strings.EqualFold(a, b)
		if (Fold(a) == Fold(b)) != eq {
			t.Fatalf("Fold(%q) = %q, Fold(%q) = %q; EqualFold %v", a, Fold(a), b, Fold(b), eq)
		}
		if same != (a == b) || (err != nil) != (eq && a != b) {
			t.Fatalf("KeyIs(%q, %q) = %v, %v; EqualFold %v", a, b, same, err, eq)
		}
	})
}
