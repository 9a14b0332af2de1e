package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// aggregateRoutingPolicy lets agent:bot use server-everything's tools
// that ask the client (sampling, elicitation) and send progress.
const aggregateRoutingPolicy = `{
  "grants": [
    {"src": ["agent:bot"], "dst": ["tool:everything"],
     "tools": ["echo", "trigger-sampling-request", "trigger-elicitation-request", "trigger-long-running-operation"]},
  ],
}`

// TestAggregatedEndpointRoutesRequestsAndProgressOfARealServer:
// server-everything behind a gateway, 'agentmesh connect --all' in front,
// driven over HTTP by the Go SDK's client (2025-11-25): the server's
// sampling/createMessage and elicitation/create reach this client, which
// answers them, and the answers reach the server; a call with a progress
// token gets the server's progress under that token.
func TestAggregatedEndpointRoutesRequestsAndProgressOfARealServer(t *testing.T) {
	m := newMesh(t)
	everything := m.join("tool", "everything", "")
	agent := m.join("agent", "bot", "")
	m.applyPolicy(aggregateRoutingPolicy)
	m.serve("everything", everything, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")

	p := startServer(t, "connect --all", []string{agentmeshBin, "connect", "--all", "--state", agent, "--listen", "127.0.0.1:0"}, m.env())
	s, err := p.waitServing(startTimeout)
	if err != nil {
		t.Fatalf("connect --all did not start serving: %v", err)
	}
	token := localToken(t, s.TokenFile, agent)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	progress := make(chan *mcp.ProgressNotificationParams, 16)
	listChanged := make(chan struct{}, 1)
	asked := make(chan string, 8)
	cl := mcp.NewClient(&mcp.Implementation{Name: "bot", Version: "e2e"}, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			asked <- "sampling"
			return &mcp.CreateMessageResult{Role: "assistant", Model: "e2e-model", Content: &mcp.TextContent{Text: "the model says 42"}}, nil
		},
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked <- "elicitation"
			return &mcp.ElicitResult{Action: "decline"}, nil
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			progress <- req.Params
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		},
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{tr, token}}}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	// server-everything offers the sampling and elicitation tools only
	// to a client that declared those capabilities: the list shows
	// them, as the aggregator's own session declares them. connect
	// serves before a slow service has listed (at most 5 s): until it
	// has, the list is empty, and list_changed says when it is not.
	var res *mcp.ListToolsResult
	for {
		if res, err = cs.ListTools(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if len(res.Tools) > 0 {
			break
		}
		select {
		case <-listChanged:
		case <-ctx.Done():
			t.Fatal("connect --all never listed the service's tools")
		}
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	want := []string{"everything__echo", "everything__trigger-elicitation-request", "everything__trigger-long-running-operation", "everything__trigger-sampling-request"}
	if !slices.Equal(names, want) {
		t.Fatalf("tools = %v, want %v", names, want)
	}

	call := func(name string, args map[string]any, meta mcp.Meta) string {
		t.Helper()
		r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args, Meta: meta})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var b strings.Builder
		for _, c := range r.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		if r.IsError {
			t.Fatalf("%s failed: %s", name, b.String())
		}
		return b.String()
	}
	if got := call("everything__trigger-sampling-request", map[string]any{"prompt": "what is six times seven?", "maxTokens": 10}, nil); !strings.Contains(got, "the model says 42") {
		t.Errorf("trigger-sampling-request returned %q, want the client's sampling answer in it", got)
	}
	if got := call("everything__trigger-elicitation-request", map[string]any{}, nil); !strings.Contains(strings.ToLower(got), "decline") {
		t.Errorf("trigger-elicitation-request returned %q, want the client's decline in it", got)
	}
	close(asked)
	var got []string
	for a := range asked {
		got = append(got, a)
	}
	if !slices.Equal(got, []string{"sampling", "elicitation"}) {
		t.Errorf("the client was asked %v, want sampling then elicitation", got)
	}

	if got := call("everything__trigger-long-running-operation", map[string]any{"duration": 0.2, "steps": 2}, mcp.Meta{"progressToken": "e2e-token"}); !strings.Contains(got, "completed") {
		t.Errorf("trigger-long-running-operation returned %q", got)
	}
	// The service sends two notifications before its answer: both reach
	// the client, under its own token, in order (the aggregator answers
	// only once it has forwarded the progress read before the answer, so
	// none is lost on a stream that has ended; the SDK's HTTP server
	// refuses a notification for a request it has answered, so one that
	// arrives came before the answer).
	for i := range 2 {
		select {
		case p := <-progress:
			if p.ProgressToken != "e2e-token" || p.Total != 2 || p.Progress != float64(i+1) {
				t.Errorf("progress %+v, want %d/2 under token e2e-token", p, i+1)
			}
		case <-ctx.Done():
			t.Fatalf("%d progress notifications reached the client, want 2", i)
		}
	}
}
