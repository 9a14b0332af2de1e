package mcpwire

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestInputRetryReadsStateAndResponses(t *testing.T) {
	tests := []struct {
		name, method, params string
		want                 InputRetry
		err                  error
	}{
		{"first call", "tools/call", `{"name":"q"}`, InputRetry{}, nil},
		{"retry", "tools/call", `{"name":"q","requestState":"s1","inputResponses":{"a":{"action":"accept"},"b":{"action":"decline"}}}`,
			InputRetry{State: "s1", Responses: map[string][]byte{"a": []byte(`{"action":"accept"}`), "b": []byte(`{"action":"decline"}`)}}, nil},
		{"escaped state", "prompts/get", `{"name":"p","requestState":"a\u0062c"}`, InputRetry{State: "abc"}, nil},
		{"nulls", "resources/read", `{"uri":"x","requestState":null,"inputResponses":null}`, InputRetry{}, nil},
		{"state number", "tools/call", `{"name":"q","requestState":1}`, InputRetry{}, ErrInvalidParams},
		{"responses array", "tools/call", `{"name":"q","inputResponses":[]}`, InputRetry{}, ErrInvalidParams},
		{"case-variant state", "tools/call", `{"name":"q","RequestState":"s"}`, InputRetry{}, ErrCaseVariantKey},
		{"case-variant responses", "tools/call", `{"name":"q","inputresponses":{}}`, InputRetry{}, ErrCaseVariantKey},
		{"other method", "tools/list", `{}`, InputRetry{}, ErrWrongMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOne(t, req(tt.method, tt.params)).InputRetry()
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("InputRetry error %v, want %v", err, tt.err)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("InputRetry = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDeclaresElicitationReadsTheRequestsCapabilities(t *testing.T) {
	const key = `"io.modelcontextprotocol/clientCapabilities"`
	tests := []struct {
		name, params string
		want         bool
		err          error
	}{
		{"no meta", `{"name":"q"}`, false, nil},
		{"no capabilities", `{"name":"q","_meta":{}}`, false, nil},
		{"empty elicitation", `{"name":"q","_meta":{` + key + `:{"elicitation":{}}}}`, true, nil},
		{"form", `{"name":"q","_meta":{` + key + `:{"elicitation":{"form":{},"url":{}}}}}`, true, nil},
		{"url only", `{"name":"q","_meta":{` + key + `:{"elicitation":{"url":{}}}}}`, false, nil},
		{"not an object", `{"name":"q","_meta":{` + key + `:{"elicitation":true}}}`, false, nil},
		{"sampling only", `{"name":"q","_meta":{` + key + `:{"sampling":{}}}}`, false, nil},
		{"case-variant elicitation", `{"name":"q","_meta":{` + key + `:{"Elicitation":{}}}}`, false, ErrCaseVariantKey},
		{"case-variant form", `{"name":"q","_meta":{` + key + `:{"elicitation":{"Form":{}}}}}`, false, ErrCaseVariantKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOne(t, req("tools/call", tt.params)).DeclaresElicitation()
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Errorf("DeclaresElicitation = %v, %v; want %v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestWithoutInputRetryKeepsEveryOtherByte(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q"}}`, ``},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","requestState":"s","inputResponses":{"a":{"action":"accept"}}}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q"}}`},
		{`{ "params" : { "requestState" : "s" , "name" : "q" , "arguments" : {"requestState":1} } , "id":"x","method":"tools/call","jsonrpc":"2.0" }`,
			`{ "params" : {"name" : "q","arguments" : {"requestState":1}} , "id":"x","method":"tools/call","jsonrpc":"2.0" }`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"inputResponses":{},"requestState":"s"}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"req\u0075estState":"s","name":"q"}}`,
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q"}}`},
	}
	for _, tt := range tests {
		decodeOne(t, tt.in) // valid input only
		got, err := WithoutInputRetry([]byte(tt.in))
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		want := tt.want
		if want == "" {
			want = tt.in
		}
		if string(got) != want {
			t.Errorf("WithoutInputRetry(%s)\n = %s\nwant %s", tt.in, got, want)
		}
		if !json.Valid(got) {
			t.Errorf("WithoutInputRetry(%s) is not JSON", tt.in)
		}
	}
}
