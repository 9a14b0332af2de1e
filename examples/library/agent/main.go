// Command agent is a Go MCP agent that needs no 'agentmesh connect':
// package mesh gives it an HTTP client that presents its node identity,
// reaches a service by name at the address the netmap gives, and accepts
// only the SPIFFE ID the netmap names for it.
//
//	agent -state ./fraud -service ledger -tool echo -args '{"text":"hi"}'
//
// It lists the service's tools (only those the policy grants this agent),
// calls one and prints the result, or the mesh's reason for a refusal.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/mesh"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	state := fs.String("state", "", "the agent node's state `DIR`")
	service := fs.String("service", "ledger", "the mesh service `NAME`")
	tool := fs.String("tool", "echo", "the `TOOL` to call")
	argsJSON := fs.String("args", `{"text":"hello from the agent"}`, "the tool's arguments, as a JSON `OBJECT`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var toolArgs map[string]any
	if err := json.Unmarshal([]byte(*argsJSON), &toolArgs); err != nil {
		return fmt.Errorf("-args: %w", err)
	}
	n, err := mesh.Open(ctx, *state, nil)
	if err != nil {
		return err
	}
	defer n.Close()

	client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: mesh.ServiceURL(*service), HTTPClient: n.HTTPClient()}, nil)
	if err != nil {
		return err
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range tools.Tools {
		names = append(names, t.Name)
	}
	fmt.Fprintf(stdout, "tools: %s\n", strings.Join(names, ", "))
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: *tool, Arguments: toolArgs})
	var rpcErr *jsonrpc.Error
	if errors.As(err, &rpcErr) {
		// The mesh says why in the error's data: {"reason": ..., "event_id": ...}.
		var why struct {
			Reason  string `json:"reason"`
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(rpcErr.Data, &why)
		fmt.Fprintf(stdout, "%s: refused: %s (audit event %s)\n", *tool, why.Reason, why.EventID)
		return nil
	} else if err != nil {
		return err
	}
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			fmt.Fprintf(stdout, "%s: %s\n", *tool, t.Text)
		}
	}
	return nil
}
