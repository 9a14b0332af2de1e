package aggregate

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// complete is the handler of completion/complete: the request goes to
// the service that owns its reference (a prompt by its aggregated name, a
// resource template by its aggregated URI template), under the service's
// own name or template, over the session sessionFor gives; the gateway
// decides it as it decides the prompt or the resource. A reference the
// aggregator does not list is invalid params.
func (a *Aggregator) complete(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	p := req.Params
	if p == nil || p.Ref == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "completion/complete: no ref"}
	}
	own := *p.Ref
	var be *backend
	a.mu.Lock()
	switch own.Type {
	case "ref/prompt":
		if be = a.more.promptOwner[own.Name]; be != nil {
			own.Name = be.more.prompts[own.Name].Name
		}
	case "ref/resource":
		if be = a.more.tmplOwner[own.URI]; be != nil {
			own.URI = be.more.templates[own.URI].def.URITemplate
		} else if be = a.more.resOwner[own.URI]; be != nil {
			own.URI = be.more.resources[own.URI].URI
		}
	}
	a.mu.Unlock()
	if be == nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "completion/complete: no prompt or resource of the aggregated endpoint has that ref"}
	}
	s, err := be.sessionFor(ctx, req.Session)
	if err != nil {
		return nil, err
	}
	res, err := s.Complete(ctx, &mcp.CompleteParams{Ref: &own, Argument: p.Argument, Context: p.Context, Meta: forwardMeta(p.Meta)})
	if err != nil {
		return nil, upstreamError(be.svc.Name, err)
	}
	return res, nil
}
