// Command server is a Go MCP tool server that needs neither 'agentmesh
// serve' nor a proxy: package mesh puts the gateway's enforcement and
// audit around its MCP handler, in this process, on the node's mTLS
// listener, and registers the address with the coordinator.
//
//	server -state ./ledger                                # a node from 'agentmesh join --kind tool'
//	server -state ./ledger -authkey "$KEY" -name ledger   # joins first
//
// It serves two tools: echo (returns its text) and add (adds two
// numbers). Once it serves, it prints "serving URL" on stdout.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/mesh"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	state := fs.String("state", "", "the tool node's state `DIR`")
	authKey := fs.String("authkey", "", "join first with this auth `KEY` (a tool key)")
	name := fs.String("name", "", "the node's `NAME` when joining")
	listen := fs.String("listen", "127.0.0.1:0", "the mTLS listener's `ADDR`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var n *mesh.Node
	var err error
	if *authKey != "" {
		n, err = mesh.Join(ctx, mesh.JoinOptions{AuthKey: *authKey, Name: *name, Kind: "tool", State: *state})
	} else {
		n, err = mesh.Open(ctx, *state, nil)
	}
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Serve(ctx, Handler(), &mesh.ServeOptions{
		Listen: *listen,
		Ready:  func(url string) { fmt.Fprintln(stdout, "serving", url) },
	})
}

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to return"`
}

type addIn struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

type addOut struct {
	Sum float64 `json:"sum"`
}

// Handler is the MCP server, as any Go MCP server is written: nothing in
// it knows about the mesh.
func Handler() http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: "ledger", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "returns its text"}, func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "add", Description: "adds a and b"}, func(_ context.Context, _ *mcp.CallToolRequest, in addIn) (*mcp.CallToolResult, addOut, error) {
		return nil, addOut{Sum: in.A + in.B}, nil
	})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
}
