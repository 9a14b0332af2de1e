package aggregate

import (
	"context"
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// maxItemBytes is the largest definition (a prompt, a resource, a
// resource template, as JSON) taken from a service; larger ones are
// skipped with a warning.
const maxItemBytes = 64 << 10

// features is what the Aggregator holds besides tools, guarded by its mu.
type features struct {
	promptOwner map[string]*backend // aggregated prompt name → its backend
	resOwner    map[string]*backend // aggregated resource URI → its backend
	tmplOwner   map[string]*backend // aggregated URI template → its backend
	// subs are the client sessions subscribed to each aggregated
	// resource URI, oldest first, each with the session to the service
	// that carries it (the SDK keeps its own table to send them the
	// updates; this one decides which session's updates are heard, when
	// a service's subscription is no longer needed and what to subscribe
	// again after a reconnect).
	subs map[string][]subscription
}

func (f *features) init() {
	f.promptOwner = map[string]*backend{}
	f.resOwner = map[string]*backend{}
	f.tmplOwner = map[string]*backend{}
	f.subs = map[string][]subscription{}
}

// backendFeatures is what one service contributes besides tools,
// guarded by the Aggregator's mu.
type backendFeatures struct {
	prompts   map[string]*mcp.Prompt      // aggregated name → the gateway's definition
	resources map[string]*mcp.Resource    // aggregated URI → the gateway's definition
	templates map[string]*serviceTemplate // aggregated URI template → the gateway's
	// subscribedOn is the session on which the service's subscriptions
	// were last made: a new session subscribes them again.
	subscribedOn *mcp.ClientSession
}

// relist makes the backend list the service again.
func (b *backend) relist() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// listMore lists what the service offers besides tools, as its
// capabilities say it does.
func (b *backend) listMore(s *mcp.ClientSession) error {
	var caps *mcp.ServerCapabilities
	if ir := s.InitializeResult(); ir != nil {
		caps = ir.Capabilities
	}
	if caps != nil && caps.Prompts != nil {
		if err := b.listPrompts(s); err != nil {
			return err
		}
	}
	if caps != nil && caps.Resources != nil {
		if err := b.listResources(s); err != nil {
			return err
		}
		if caps.Resources.Subscribe {
			b.resubscribe(s)
		}
	}
	return nil
}

// withdraw removes every tool, prompt and resource of be from the
// server: its session ended.
func (a *Aggregator) withdraw(be *backend) {
	a.setTools(be, nil)
	a.setPrompts(be, nil)
	a.setResources(be, nil, nil)
}

// dropMoreLocked removes be's prompts and resources at once, as
// dropLocked does its tools.
func (a *Aggregator) dropMoreLocked(be *backend) {
	a.setPromptsLocked(be, nil)
	a.setResourcesLocked(be, nil, nil)
}

// capabilities are the aggregated server's capabilities for a client's
// initialize (or server/discover): the SDK's (tools), with prompts,
// resources and completions offered only when some aggregated service
// offered them in its last session, always with listChanged (the set follows the
// services), and subscribe when some service supports it. They are fixed
// at the client's initialize: a kind that appears later reaches the
// client only as a list_changed, and a new client session sees it.
func (a *Aggregator) capabilities(base *mcp.ServerCapabilities) *mcp.ServerCapabilities {
	c := &mcp.ServerCapabilities{}
	if base != nil {
		cc := *base
		c = &cc
	}
	c.Prompts, c.Resources, c.Completions = nil, nil, nil
	a.mu.Lock()
	backends := make([]*backend, 0, len(a.backends))
	for _, be := range a.backends {
		backends = append(backends, be)
	}
	a.mu.Unlock()
	for _, be := range backends {
		be.mu.Lock()
		caps := be.caps
		be.mu.Unlock()
		if caps == nil {
			continue
		}
		if caps.Prompts != nil {
			c.Prompts = &mcp.PromptCapabilities{ListChanged: true}
		}
		if caps.Completions != nil {
			c.Completions = &mcp.CompletionCapabilities{}
		}
		if caps.Resources != nil {
			if c.Resources == nil {
				c.Resources = &mcp.ResourceCapabilities{ListChanged: true}
			}
			c.Resources.Subscribe = c.Resources.Subscribe || caps.Resources.Subscribe
		}
	}
	return c
}

// same reports whether a and b have the same JSON.
func same(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// tooBig reports whether v's JSON is over maxItemBytes (or cannot be
// written).
func tooBig(v any) bool {
	j, err := json.Marshal(v)
	return err != nil || len(j) > maxItemBytes
}

// resourceUpdated is the handler of a service's
// notifications/resources/updated (resources.go).
func (b *backend) resourceUpdated(ctx context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
	if req.Params != nil {
		b.a.resourceUpdated(ctx, b, req.Session, req.Params.URI)
	}
}
