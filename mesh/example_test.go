package mesh_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/mesh"
)

// An agent joins once with an auth key; its state directory then holds
// its identity for later runs (Open).
func ExampleJoin() {
	ctx := context.Background()
	n, err := mesh.Join(ctx, mesh.JoinOptions{AuthKey: os.Getenv("AGENTMESH_AUTHKEY"), Name: "fraud", State: "./fraud"})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	fmt.Println("joined as", n.ID())
}

// An agent calls a mesh service's tool with the MCP Go SDK: the library's
// HTTP client is the transport's, and no connector runs.
func ExampleNode_HTTPClient() {
	ctx := context.Background()
	n, err := mesh.Open(ctx, "./fraud", nil) // from 'agentmesh join' or Join
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	client := mcp.NewClient(&mcp.Implementation{Name: "fraud", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   mesh.ServiceURL("ledger"),
		HTTPClient: n.HTTPClient(),
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		log.Fatal(err) // a refusal is a JSON-RPC error whose data says the reason
	}
	fmt.Println(res.Content[0].(*mcp.TextContent).Text)
}

// A Go MCP server enforces the mesh's policy and writes its audit trail
// in-process: Serve puts the gateway around the SDK's handler, on the
// node's mTLS listener, and registers the address with the coordinator.
func ExampleNode_Serve() {
	ctx := context.Background()
	n, err := mesh.Open(ctx, "./ledger", nil) // a tool node
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	server := mcp.NewServer(&mcp.Implementation{Name: "ledger", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	err = n.Serve(ctx, handler, &mesh.ServeOptions{
		Listen: "0.0.0.0:8443",
		Ready:  func(url string) { log.Println("serving", url) },
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A served handler learns which node calls, for what the policy cannot
// say (the rows a caller may see); the policy has already allowed the
// message.
func ExampleCallerOf() {
	var mcpHandler http.Handler // the SDK's StreamableHTTPHandler
	withCaller := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := mesh.CallerOf(r); ok {
			log.Printf("%s (%s, tags %v) calls", c.ID, c.Kind, c.Tags)
		}
		mcpHandler.ServeHTTP(w, r)
	})
	_ = withCaller // n.Serve(ctx, withCaller, nil)
}

// A webhook that receives a coordinator's alerts checks each delivery's
// signature before it trusts it.
func ExampleVerifyAlert() {
	secret := []byte(os.Getenv("WEBHOOK_SECRET"))
	http.HandleFunc("POST /agentmesh", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || mesh.VerifyAlert(secret, r.Header.Get(mesh.AlertSignatureHeader), body, time.Now(), 0) != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var a struct {
			ID, Kind, Subject, Summary string
		}
		json.Unmarshal(body, &a)
		log.Printf("agentmesh alert %s (%s): %s", a.Kind, a.ID, a.Summary)
	})
}
