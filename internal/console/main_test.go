package console

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test, the browser's included, stops what it started. The one
// exception is not the console's: the demo's ledger serves MCP with the
// SDK's Streamable HTTP handler, whose server session's reader outlives
// the HTTP server that carried it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/modelcontextprotocol/go-sdk/mcp.(*streamableServerConn).Read"))
}
