package mcpwire_test

import (
	"fmt"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

func Example() {
	in := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"query","arguments":{"sql":"select 1"}}}`)
	msgs, _, err := mcpwire.Decode(in, mcpwire.Limits{})
	if err != nil {
		fmt.Printf("%s\n", mcpwire.ErrorResponse(nil, mcpwire.Error{Code: mcpwire.ErrorCode(err), Message: "invalid message"}))
		return
	}
	m := &msgs[0]
	tc, err := m.ToolCall()
	if err != nil {
		fmt.Printf("%s\n", mcpwire.ErrorResponse(m.ID, mcpwire.Error{Code: mcpwire.ErrorCode(err), Message: "invalid params"}))
		return
	}
	fmt.Println(m.Method, tc.Name, tc.Arguments["sql"])

	smuggled := []byte(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"query","Name":"drop_table"}}`)
	_, _, err = mcpwire.Decode(smuggled, mcpwire.Limits{})
	fmt.Printf("%s\n", mcpwire.ErrorResponse([]byte("2"), mcpwire.Error{Code: mcpwire.ErrorCode(err), Message: "rejected"}))
	// Output:
	// tools/call query select 1
	// {"jsonrpc":"2.0","id":2,"error":{"code":-32600,"message":"rejected"}}
}

func ExampleFilterList() {
	result := []byte(`{"tools":[{"name":"query"},{"name":"drop_table"}],"nextCursor":"c2"}`)
	out, kept, err := mcpwire.FilterList(result, "tools", func(name string) bool { return name != "drop_table" })
	fmt.Println(string(out), kept, err)
	// Output: {"tools":[{"name":"query"}],"nextCursor":"c2"} [query] <nil>
}
