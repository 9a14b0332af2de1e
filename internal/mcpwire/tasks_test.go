package mcpwire

import (
	"errors"
	"testing"
)

func TestTaskRequestReadsBothProtocolGenerations(t *testing.T) {
	const caps = `"_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}`
	tests := []struct {
		name, method, params string
		want                 bool
		err                  error
	}{
		{"plain call", "tools/call", `{"name":"q"}`, false, nil},
		{"2025-11-25 task", "tools/call", `{"name":"q","task":{"ttl":60000}}`, true, nil},
		{"null task", "tools/call", `{"name":"q","task":null}`, false, nil},
		{"2026-07-28 extension", "tools/call", `{"name":"q",` + caps + `}`, true, nil},
		{"other extensions only", "tools/call", `{"name":"q","_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"x":{}}}}}`, false, nil},
		{"any method", "prompts/get", `{"name":"p","task":{}}`, true, nil},
		{"no params", "ping", ``, false, nil},
		{"task string", "tools/call", `{"name":"q","task":"x"}`, false, ErrInvalidParams},
		{"lone Task", "tools/call", `{"name":"q","Task":{}}`, false, ErrCaseVariantKey},
		{"long s in task", "tools/call", `{"name":"q","ta\u017fk":{}}`, false, ErrCaseVariantKey},
		{"case-variant meta", "tools/call", `{"name":"q","_META":{}}`, false, ErrCaseVariantKey},
		{"case-variant capabilities", "tools/call", `{"name":"q","_meta":{"io.modelcontextprotocol/ClientCapabilities":{}}}`, false, ErrCaseVariantKey},
		{"case-variant extension", "tools/call", `{"name":"q","_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/Tasks":{}}}}}`, false, ErrCaseVariantKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"jsonrpc":"2.0","id":1,"method":"` + tt.method + `"}`
			if tt.params != "" {
				in = req(tt.method, tt.params)
			}
			got, err := decodeOne(t, in).TaskRequest()
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Errorf("TaskRequest = %v, %v; want %v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestTaskIDIsReadStrictly(t *testing.T) {
	tests := []struct {
		name, method, params, want string
		err                        error
	}{
		{"get", "tasks/get", `{"taskId":"t-1"}`, "t-1", nil},
		{"update with input", "tasks/update", `{"taskId":"t-1","inputResponses":{"k":{}}}`, "t-1", nil},
		{"cancel", "tasks/cancel", `{"taskId":"t\u002d1"}`, "t-1", nil},
		{"lone TaskId", "tasks/get", `{"TaskId":"t-1"}`, "", ErrCaseVariantKey},
		{"missing", "tasks/result", `{}`, "", ErrInvalidParams},
		{"number", "tasks/get", `{"taskId":1}`, "", ErrInvalidParams},
		{"control character", "tasks/get", `{"taskId":"t\u0000"}`, "", ErrInvalidParams},
		{"list names no task", "tasks/list", `{"taskId":"t-1"}`, "", ErrWrongMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOne(t, req(tt.method, tt.params)).TaskID()
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Errorf("TaskID = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
	if !IsTaskMethod("tasks/get") || IsTaskMethod("tasks/list") || IsTaskMethod("tasks/run") {
		t.Error("IsTaskMethod misclassifies")
	}
}

func TestCreatedTaskIDReadsTaskHandles(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"2025-11-25 handle", `{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"a","status":"working"}}}`, "a"},
		{"2026-07-28 handle", `{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":"b","status":"working"}}`, "b"},
		{"tool result", `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`, ""},
		{"taskId without resultType", `{"jsonrpc":"2.0","id":1,"result":{"taskId":"c"}}`, ""},
		{"error", `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}`, ""},
		{"request", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"task":{"taskId":"d"}}}`, ""},
		{"empty id", `{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":""}}}`, ""},
	}
	for _, tt := range tests {
		got, ok := decodeOne(t, tt.in).CreatedTaskID()
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("%s: CreatedTaskID = %q, %v; want %q", tt.name, got, ok, tt.want)
		}
	}
}

func TestListenReadsWhatItSubscribesTo(t *testing.T) {
	m := decodeOne(t, req("subscriptions/listen", `{"notifications":{"toolsListChanged":true,"resourcesListChanged":false,"resourceSubscriptions":["file:///a","db://b"],"other":1}}`))
	f, err := m.Listen()
	if err != nil || !f.ToolsListChanged || f.PromptsListChanged || f.ResourcesListChanged || len(f.ResourceSubscriptions) != 2 || f.ResourceSubscriptions[1] != "db://b" {
		t.Fatalf("Listen = %+v, %v", f, err)
	}
	for _, tt := range []struct {
		name, params string
		err          error
	}{
		{"case-variant notifications", `{"Notifications":{}}`, ErrCaseVariantKey},
		{"case-variant subscriptions", `{"notifications":{"ResourceSubscriptions":["db://x"]}}`, ErrCaseVariantKey},
		{"subscriptions not an array", `{"notifications":{"resourceSubscriptions":"db://x"}}`, ErrInvalidParams},
		{"uri not a string", `{"notifications":{"resourceSubscriptions":[1]}}`, ErrInvalidParams},
		{"flag not a boolean", `{"notifications":{"toolsListChanged":"yes"}}`, ErrInvalidParams},
	} {
		if _, err := decodeOne(t, req("subscriptions/listen", tt.params)).Listen(); !errors.Is(err, tt.err) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.err)
		}
	}
}

func TestResultHasFindsListShapes(t *testing.T) {
	tests := []struct {
		in, field string
		want      bool
	}{
		{`{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`, "tools", true},
		{`{"jsonrpc":"2.0","id":1,"result":{"tools":{}}}`, "tools", false},
		{`{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"x"}]}}`, "tools", true}, // a case variant counts: filtering it fails closed
		{`{"jsonrpc":"2.0","id":1,"result":{"content":[],"nextCursor":"x"}}`, "tools", false},
		{`{"jsonrpc":"2.0","id":1,"result":[]}`, "tools", false},
		{`{"jsonrpc":"2.0","id":1,"method":"tools","params":{"tools":[]}}`, "tools", false},
	}
	for _, tt := range tests {
		if got := decodeOne(t, tt.in).ResultHas(tt.field); got != tt.want {
			t.Errorf("%s: ResultHas(%q) = %v, want %v", tt.in, tt.field, got, tt.want)
		}
	}
}
