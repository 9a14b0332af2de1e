package aggregate

import (
	"context"
	"errors"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestCompletionGoesToTheServiceOfItsRef: completion/complete of an
// aggregated prompt or template reaches the service that lists it, under
// the service's own name or template; a ref the endpoint does not list
// is invalid params; completions are offered only when a service does.
func TestCompletionGoesToTheServiceOfItsRef(t *testing.T) {
	c := rich("c", []string{"greet"}, nil, nil, nil)
	// The SDK offers completions when a server has a handler: only a's.
	a := mcp.NewServer(&mcp.Implementation{Name: "a", Version: "1"}, &mcp.ServerOptions{
		CompletionHandler: func(_ context.Context, r *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			v := r.Params.Ref.Type + " " + r.Params.Ref.Name + r.Params.Ref.URI + " " + r.Params.Argument.Value
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{v}}}, nil
		},
	})
	a.AddPrompt(&mcp.Prompt{Name: "greet"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	a.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: "file:///{path}", Name: "f"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{}, nil
	})
	_, cs, changed := newFixtureWith(t, map[string]*mcp.Server{"a": a, "c": c},
		fixtureOptions{services: []Service{{Name: "a", Addr: "1"}, {Name: "c", Addr: "2"}}})
	waitList(t, changed, promptNames(cs), "a__greet", "c__greet")
	ctx := context.Background()
	for ref, want := range map[mcp.CompleteReference]string{
		{Type: "ref/prompt", Name: "a__greet"}:                      "ref/prompt greet x",
		{Type: "ref/resource", URI: "agentmesh://a/file:///{path}"}: "ref/resource file:///{path} x",
	} {
		res, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &ref, Argument: mcp.CompleteParamsArgument{Name: "who", Value: "x"}})
		if err != nil || len(res.Completion.Values) != 1 || res.Completion.Values[0] != want {
			t.Errorf("complete %+v: %+v, %v; want %q", ref, res, err, want)
		}
	}
	// c lists greet but offers no completion: its error comes back.
	if _, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "c__greet"}, Argument: mcp.CompleteParamsArgument{Name: "who"}}); err == nil {
		t.Error("c__greet completed, though c offers no completion")
	}
	_, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "nobody__greet"}, Argument: mcp.CompleteParamsArgument{Name: "who"}})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("an unknown ref: %v, want invalid params", err)
	}
	if ir := cs.InitializeResult(); ir == nil || ir.Capabilities.Completions == nil {
		t.Errorf("completions not offered though a offers them: %+v", ir)
	}
}
