package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"agentmesh/internal/mcpwire"
)

func TestHeaderCheckRequiresHeadersToMatchBody(t *testing.T) {
	call := func(name, meta string) *mcpwire.Message {
		params := `{"name":"` + name + `","arguments":{}`
		if meta != "" {
			params += `,"_meta":{"io.modelcontextprotocol/protocolVersion":"` + meta + `"}`
		}
		params += `}`
		msgs, _, err := mcpwire.Decode([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":`+params+`}`), mcpwire.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return &msgs[0]
	}
	tests := []struct {
		name string
		hdr  map[string][]string
		msg  *mcpwire.Message
		ok   bool
	}{
		{"session version without headers", map[string][]string{"Mcp-Protocol-Version": {"2025-11-25"}}, call("echo", ""), true},
		{"modern with matching headers", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), true},
		{"modern with base64 name", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"=?base64?ZWNobw==?="}}, call("echo", "2026-07-28"), true},
		{"modern without Mcp-Method", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), false},
		{"modern without Mcp-Name", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}}, call("echo", "2026-07-28"), false},
		{"name mismatch", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("drop_table", "2026-07-28"), false},
		{"method mismatch on old version", map[string][]string{"Mcp-Method": {"tools/list"}}, call("echo", ""), false},
		{"repeated Mcp-Name", map[string][]string{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo", "drop_table"}}, call("echo", ""), false},
		{"header and _meta versions differ", map[string][]string{"Mcp-Protocol-Version": {"2025-11-25"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), false},
		{"_meta version without header", map[string][]string{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := headerCheck(tt.hdr, tt.msg)
			if (got == "") != tt.ok {
				t.Fatalf("headerCheck = %q, want ok=%v", got, tt.ok)
			}
		})
	}
}

func TestEventReaderKeepsEventsByteForByte(t *testing.T) {
	stream := "event: message\nid: 1\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: line1\r\ndata: line2\r\n\r\n"
	er := newEventReader(strings.NewReader(stream), 1<<20)
	var raw bytes.Buffer
	var datas []string
	for {
		ev, err := er.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		raw.Write(ev.raw)
		if ev.data != nil {
			datas = append(datas, string(ev.data))
		}
	}
	if raw.String() != stream {
		t.Fatalf("raw = %q, want %q", raw.String(), stream)
	}
	if want := []string{`{"a":1}`, "line1\nline2"}; strings.Join(datas, "|") != strings.Join(want, "|") {
		t.Fatalf("data = %q, want %q", datas, want)
	}
}

func TestEventReaderBoundsEventSize(t *testing.T) {
	er := newEventReader(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n"), 50)
	if _, err := er.next(); !errors.Is(err, errEventTooLarge) {
		t.Fatalf("err = %v, want errEventTooLarge", err)
	}
}

func TestRebuildKeepsEventFields(t *testing.T) {
	ev := sseEvent{raw: []byte("event: message\nid: 7\ndata: old\n\n")}
	if got := string(ev.rebuild([]byte("new"))); got != "event: message\nid: 7\ndata: new\n\n" {
		t.Fatalf("rebuild = %q", got)
	}
}

func TestListChangedNotificationsCarrySubscriptionID(t *testing.T) {
	st := newStream(listAll, json.RawMessage(`"sub-1"`))
	st.post(listTools | listResources | listTemplates)
	msgs := st.messages(st.take())
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2 (tools, resources once)", len(msgs))
	}
	for _, m := range msgs {
		var n struct {
			Method string `json:"method"`
			Params struct {
				Meta map[string]string `json:"_meta"`
			} `json:"params"`
		}
		if err := json.Unmarshal(m, &n); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if n.Params.Meta["io.modelcontextprotocol/subscriptionId"] != "sub-1" {
			t.Fatalf("%s lacks the subscription id", m)
		}
	}
}

func TestEveryFileIsInThePackageDocumentedInDocGo(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if f != "doc.go" && bytes.Contains(b, []byte("\n// Package gateway")) {
			t.Errorf("%s repeats the package doc; keep it in doc.go", f)
		}
	}
	b, err := os.ReadFile("doc.go")
	if err != nil || !bytes.HasPrefix(b, []byte("// Package gateway ")) || !bytes.Contains(b, []byte("# Threat model")) {
		t.Fatal("doc.go must hold the package doc with its threat model")
	}
}
