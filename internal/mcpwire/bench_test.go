package mcpwire

import (
	"fmt"
	"strings"
	"testing"
)

// toolCall1K is a tools/call request of about 1 KiB.
var toolCall1K = func() []byte {
	args := `{"sql":"SELECT id, name, email, created_at FROM customers WHERE region = $1 AND status = $2 ORDER BY created_at DESC LIMIT 100",` +
		`"params":["eu-west","active"],"timeout_ms":5000,"explain":false,` +
		`"options":{"read_only":true,"max_rows":1000,"format":"json","labels":{"team":"fraud","caller":"fraud-detector","trace":"0af7651916cd43dd8448eb211c80319c"}},` +
		`"note":"` + strings.Repeat("lorem ipsum dolor sit amet ", 19) + `"}`
	m := `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"_meta":{"progressToken":"p-42","io.modelcontextprotocol/protocolVersion":"2026-07-28"},"name":"query","arguments":` + args + `}}`
	return []byte(m)
}()

func BenchmarkDecodeToolCall(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(toolCall1K)))
	for b.Loop() {
		if _, _, err := Decode(toolCall1K, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeAndToolCall is what the gateway does per tools/call: decode,
// then read the name and arguments for policy.
func BenchmarkDecodeAndToolCall(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(toolCall1K)))
	for b.Loop() {
		msgs, _, err := Decode(toolCall1K, Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := msgs[0].ToolCall(); err != nil {
			b.Fatal(err)
		}
	}
}

func toolsListResult(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"tools":[`)
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"name":"tool_%d","title":"Tool %d","description":"Does thing number %d for the caller.",`+
			`"inputSchema":{"type":"object","properties":{"id":{"type":"string"},"limit":{"type":"integer"}},"required":["id"]},`+
			`"annotations":{"readOnlyHint":%v}}`, i, i, i, i%2 == 0)
	}
	sb.WriteString(`],"nextCursor":"eyJwYWdlIjoyfQ=="}`)
	return []byte(sb.String())
}

func BenchmarkFilterList(b *testing.B) {
	result := toolsListResult(100)
	keep := func(name string) bool { return len(name)%2 == 0 }
	b.ReportAllocs()
	b.SetBytes(int64(len(result)))
	for b.Loop() {
		if _, _, err := FilterList(result, "tools", keep); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFilterResult is FilterList on a result Decode already validated.
func BenchmarkFilterResult(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":1,"result":` + string(toolsListResult(100)) + `}`)
	msgs, _, err := Decode(msg, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	keep := func(name string) bool { return len(name)%2 == 0 }
	b.ReportAllocs()
	b.SetBytes(int64(len(msgs[0].Result)))
	for b.Loop() {
		if _, _, err := msgs[0].FilterResult("tools", keep); err != nil {
			b.Fatal(err)
		}
	}
}
