package gatewaytest

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Calls counts tool, prompt and resource invocations that reached a server
// built by NewServer.
type Calls struct {
	mu   sync.Mutex
	n    map[string]int
	stop chan struct{} // closed by Release
	once sync.Once
}

// NewCalls returns an empty counter.
func NewCalls() *Calls { return &Calls{n: make(map[string]int), stop: make(chan struct{})} }

// Release ends every wait call in flight, and those to come: the SDK's
// server does not cancel a call when its session closes, and closing it
// waits for the call.
func (c *Calls) Release() { c.once.Do(func() { close(c.stop) }) }

func (c *Calls) add(key string) {
	c.mu.Lock()
	c.n[key]++
	c.mu.Unlock()
}

// Count returns how often key ("tool:echo", "prompt:greet",
// "resource:db://public/a") was invoked.
func (c *Calls) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// Text is the input of the echo-like tools.
type Text struct {
	Text string `json:"text,omitempty"`
	SQL  string `json:"sql,omitempty"`
	Size int    `json:"size,omitempty"`
}

// Out is their output.
type Out struct {
	Text string `json:"text"`
}

// Tools, prompts and resources that NewServer offers.
var (
	ToolNames     = []string{"echo", "query", "drop_table", "progress", "sample", "big", "wait"}
	PromptNames   = []string{"greet", "secret"}
	ResourceURIs  = []string{"db://public/a", "db://private/b"}
	TemplateURIs  = []string{"db://public/{id}", "db://private/{id}"}
	CompletionRes = "completed"
)

// NewServer returns an MCP server with ToolNames, PromptNames, ResourceURIs
// and TemplateURIs; every invocation is counted in calls.
//
//   - echo returns its text; query returns "rows for SQL"; drop_table returns
//     "dropped".
//   - progress sends Size progress notifications to the caller first.
//   - sample asks the client for a sampling/createMessage and returns the
//     model's text.
//   - big returns a text of Size bytes.
//   - wait sends Size progress notifications to the caller (given a
//     progress token), then never answers: it returns only when its
//     request is cancelled or the calls released (Calls.Release): a
//     call in flight for a test to cut.
func NewServer(calls *Calls) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "gatewaytest", Version: "1"}, &mcp.ServerOptions{
		CompletionHandler: func(_ context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			calls.add("complete:" + req.Params.Ref.Type)
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{CompletionRes}}}, nil
		},
	})
	tool := func(name string, f func(ctx context.Context, req *mcp.CallToolRequest, in Text) (string, error)) {
		mcp.AddTool(s, &mcp.Tool{Name: name, Description: name}, func(ctx context.Context, req *mcp.CallToolRequest, in Text) (*mcp.CallToolResult, Out, error) {
			calls.add("tool:" + name)
			text, err := f(ctx, req, in)
			if err != nil {
				return nil, Out{}, err
			}
			return nil, Out{Text: text}, nil
		})
	}
	tool("echo", func(_ context.Context, _ *mcp.CallToolRequest, in Text) (string, error) { return in.Text, nil })
	tool("query", func(_ context.Context, _ *mcp.CallToolRequest, in Text) (string, error) {
		return "rows for " + in.SQL, nil
	})
	tool("drop_table", func(context.Context, *mcp.CallToolRequest, Text) (string, error) { return "dropped", nil })
	tool("progress", func(ctx context.Context, req *mcp.CallToolRequest, in Text) (string, error) {
		token := req.Params.GetProgressToken()
		for i := range in.Size {
			if token == nil {
				break
			}
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: float64(i + 1), Total: float64(in.Size)}); err != nil {
				return "", err
			}
		}
		return "done", nil
	})
	tool("sample", func(ctx context.Context, req *mcp.CallToolRequest, in Text) (string, error) {
		res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
			MaxTokens: 10,
			Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: in.Text}}},
		})
		if err != nil {
			return "", fmt.Errorf("sampling: %w", err)
		}
		tc, ok := res.Content.(*mcp.TextContent)
		if !ok {
			return "", fmt.Errorf("sampling: unexpected content %T", res.Content)
		}
		return tc.Text, nil
	})
	tool("big", func(_ context.Context, _ *mcp.CallToolRequest, in Text) (string, error) {
		return strings.Repeat("x", in.Size), nil
	})
	tool("wait", func(ctx context.Context, req *mcp.CallToolRequest, in Text) (string, error) {
		if token := req.Params.GetProgressToken(); token != nil {
			for i := range in.Size {
				if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: token, Progress: float64(i + 1)}); err != nil {
					return "", err
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-calls.stop:
			return "", fmt.Errorf("released")
		}
	})
	for _, name := range PromptNames {
		s.AddPrompt(&mcp.Prompt{Name: name}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			calls.add("prompt:" + name)
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello from " + name}}}}, nil
		})
	}
	for _, uri := range ResourceURIs {
		s.AddResource(&mcp.Resource{URI: uri, Name: uri, MIMEType: "text/plain"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			calls.add("resource:" + uri)
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: "contents of " + uri}}}, nil
		})
	}
	for _, tmpl := range TemplateURIs {
		s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: tmpl, Name: tmpl}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			calls.add("template:" + tmpl)
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "contents"}}}, nil
		})
	}
	return s
}
