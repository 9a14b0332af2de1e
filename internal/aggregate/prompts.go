package aggregate

import (
	"context"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// MaxPromptsPerService is the most prompts taken from one service; the
// rest are skipped with a warning.
const MaxPromptsPerService = 1000

// listPrompts reads the service's prompts (every page, within
// ListTimeout) and puts them in the aggregated server. A gateway's
// JSON-RPC error (it does not list prompts after all) withdraws them
// with a warning; any other failure ends the session, as for tools.
func (b *backend) listPrompts(s *mcp.ClientSession) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	var prompts []*mcp.Prompt
	for p, err := range s.Prompts(ctx, nil) {
		if err != nil {
			var je *jsonrpc.Error
			if errors.As(err, &je) {
				b.a.log.Warn("aggregate: the service refused prompts/list; its prompts are withdrawn", "service", b.svc.Name, "err", err)
				b.a.setPrompts(b, nil)
				return nil
			}
			return fmt.Errorf("prompts/list: %w", err)
		}
		if p == nil {
			continue
		}
		if len(prompts) == MaxPromptsPerService {
			b.a.log.Warn("aggregate: the service lists more prompts than are aggregated; skipping the rest", "service", b.svc.Name, "max", MaxPromptsPerService)
			break
		}
		prompts = append(prompts, p)
	}
	if prompts == nil {
		prompts = []*mcp.Prompt{}
	}
	b.a.setPrompts(b, prompts)
	return nil
}

// setPrompts makes be's prompts in the server exactly prompts (nil:
// none), named SERVICE<sep>PROMPT under the same rules as tools (admit).
func (a *Aggregator) setPrompts(be *backend, prompts []*mcp.Prompt) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if prompts != nil && a.backends[be.svc.Name] != be {
		return // stopped meanwhile: its successor sets its own
	}
	a.setPromptsLocked(be, prompts)
}

func (a *Aggregator) setPromptsLocked(be *backend, prompts []*mcp.Prompt) {
	next := map[string]*mcp.Prompt{}
	for _, p := range prompts {
		if tooBig(p) {
			a.log.Warn("aggregate: skipping a prompt whose definition is too large", "service", be.svc.Name, "prompt", p.Name, "max_bytes", maxItemBytes)
			continue
		}
		name, ok := a.admit(be, "prompt", p.Name, func(n string) bool { return next[n] != nil }, a.more.promptOwner)
		if !ok {
			continue
		}
		next[name] = p
	}
	if gone := released(be, be.more.prompts, next, a.more.promptOwner); len(gone) > 0 {
		a.server.RemovePrompts(gone...)
	}
	for name, p := range next {
		if old, ok := be.more.prompts[name]; ok && same(old, p) {
			continue
		}
		a.more.promptOwner[name] = be
		c := *p
		c.Name = name
		a.server.AddPrompt(&c, be.getPrompt(p.Name))
	}
	be.more.prompts = next
}

// getPrompt is the handler of the service's prompt named prompt: the
// request goes to the gateway under the prompt's own name, and its
// result or error comes back unchanged.
func (b *backend) getPrompt(prompt string) mcp.PromptHandler {
	return func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		s, end, err := b.sessionForRequest(ctx, req.Session, req.Params.Meta)
		if err != nil {
			return nil, err
		}
		defer end()
		res, err := s.GetPrompt(ctx, &mcp.GetPromptParams{Name: prompt, Arguments: req.Params.Arguments, Meta: forwardMeta(req.Params.Meta)})
		if err != nil {
			return nil, upstreamError(b.svc.Name, err)
		}
		return res, nil
	}
}

// upstreamError is the answer to a request whose forwarding failed: the
// gateway's JSON-RPC error as it gave it (a denial among them), or
// unavailable.
func upstreamError(svc string, err error) error {
	var je *jsonrpc.Error
	if errors.As(err, &je) {
		return je
	}
	return unavailable(svc, err)
}
