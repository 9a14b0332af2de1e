package mcpwire

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestErrorResponse(t *testing.T) {
	tests := []struct {
		name string
		id   string
		e    Error
		want string
	}{
		{"integer id", `7`, Error{Code: CodeInvalidParams, Message: "denied"}, `{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"denied"}}`},
		{"string id kept byte for byte", `"a\u0062"`, Error{Code: -32001, Message: "m"}, `{"jsonrpc":"2.0","id":"a\u0062","error":{"code":-32001,"message":"m"}}`},
		{"nil id", ``, Error{Code: CodeParseError, Message: "parse error"}, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`},
		{"null id", `null`, Error{Code: 1, Message: "m"}, `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}`},
		{"invalid id", `{"x":1}`, Error{Code: 1, Message: "m"}, `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}`},
		{"garbage id", `1,"x":2`, Error{Code: 1, Message: "m"}, `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}`},
		{"fraction id", `1.5`, Error{Code: 1, Message: "m"}, `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}`},
		{"id with whitespace", ` 5 `, Error{Code: 1, Message: "m"}, `{"jsonrpc":"2.0","id":5,"error":{"code":1,"message":"m"}}`},
		{"data", `1`, Error{Code: -32001, Message: "denied", Data: json.RawMessage(`{"reason":"tool_not_granted","event":"ev1"}`)}, `{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"denied","data":{"reason":"tool_not_granted","event":"ev1"}}}`},
		{"invalid data dropped", `1`, Error{Code: 1, Message: "m", Data: json.RawMessage(`{"a":`)}, `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}`},
		{"message escaped", `1`, Error{Code: 1, Message: "a\"b\\c\nd\x01\x7f\u2028é\xff"}, `{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"a\"b\\c\nd\u0001\u007f\u2028é\ufffd"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id json.RawMessage
			if tt.id != "" {
				id = json.RawMessage(tt.id)
			}
			got := ErrorResponse(id, tt.e)
			if string(got) != tt.want {
				t.Errorf("ErrorResponse =\n%s\nwant\n%s", got, tt.want)
			}
			msgs, _, err := Decode(got, Limits{})
			if err != nil {
				t.Fatalf("Decode(ErrorResponse) = %v", err)
			}
			if m := msgs[0]; m.Kind != KindResponse || m.Error == nil || m.Error.Code != tt.e.Code {
				t.Errorf("decoded %+v", m)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		in   string
		lim  Limits
		want error
	}{
		{`{"a":[1,"x",null,true,{"b":{}}]}`, Limits{}, nil},
		{` 1 `, Limits{}, nil},
		{`{"a":1,"A":2}`, Limits{}, ErrCaseVariantKey},
		{`{"a":1,"a":2}`, Limits{}, ErrDuplicateKey},
		{`[1,]`, Limits{}, ErrSyntax},
		{`"\ud800"`, Limits{}, ErrInvalidUTF8},
		{`[[[]]]`, Limits{MaxDepth: 2}, ErrTooDeep},
		{`[1,2,3]`, Limits{MaxBytes: 3}, ErrTooLarge},
	}
	for _, tt := range tests {
		if err := Validate([]byte(tt.in), tt.lim); !errors.Is(err, tt.want) {
			t.Errorf("Validate(%s) = %v, want %v", tt.in, err, tt.want)
		}
	}
}
