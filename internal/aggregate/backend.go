package aggregate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// backend is one service's upstream: an SDK client session to its
// gateway, kept open (reconnected after failures with a growing wait)
// until it is stopped, and the tools it contributes.
type backend struct {
	a   *Aggregator
	svc Service

	ctx    context.Context
	cancel context.CancelFunc
	// changed is signalled by the session's tools/list_changed.
	changed chan struct{}
	// settled is closed once the service has been tried: listed, or
	// found down.
	settled    chan struct{}
	settleOnce sync.Once

	mu      sync.Mutex
	session *mcp.ClientSession // nil while down
	lastErr error              // why it is down
	instr   string
	caps    *mcp.ServerCapabilities // the last session's; kept while down

	// more is what the service offers besides tools (prompts.go,
	// resources.go), guarded by the Aggregator's mu.
	more backendFeatures

	// subs carries the subscriptions made over the shared session when
	// it speaks 2026-07-28 (subscriptions.go).
	subs carrierState

	// tools is guarded by the Aggregator's mu: aggregated name → the
	// gateway's definition.
	tools map[string]*mcp.Tool
}

func newBackend(a *Aggregator, svc Service) *backend {
	ctx, cancel := context.WithCancel(context.Background())
	return &backend{a: a, svc: svc, ctx: ctx, cancel: cancel, changed: make(chan struct{}, 1), settled: make(chan struct{}), tools: map[string]*mcp.Tool{}}
}

// stop ends the backend's session; run then removes its tools.
func (b *backend) stop() {
	b.cancel()
	b.settle()
}

// settle marks the service as tried.
func (b *backend) settle() { b.settleOnce.Do(func() { close(b.settled) }) }

// instructions are the upstream's server instructions.
func (b *backend) instructions() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.instr
}

// run keeps a session to the service until stop, and its tools in the
// aggregated server while the session lives.
func (b *backend) run() {
	log := b.a.log.With("service", b.svc.Name)
	defer b.a.withdraw(b)
	wait := retryMin
	for b.ctx.Err() == nil {
		err := b.serve()
		b.a.withdraw(b)
		b.settle()
		if b.ctx.Err() != nil {
			return
		}
		log.Warn("aggregate: the service is unavailable; its tools are withdrawn until it answers again", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// serve connects once and keeps the service's tools current until the
// session ends or the backend stops.
func (b *backend) serve() error {
	tr, err := b.a.transport(b.svc)
	if err != nil {
		b.down(err)
		return err
	}
	opts := b.sharedOptions()
	// Every list_changed lists the service again (features.go).
	opts.ToolListChangedHandler = func(context.Context, *mcp.ToolListChangedRequest) { b.relist() }
	opts.PromptListChangedHandler = func(context.Context, *mcp.PromptListChangedRequest) { b.relist() }
	opts.ResourceListChangedHandler = func(context.Context, *mcp.ResourceListChangedRequest) { b.relist() }
	opts.ResourceUpdatedHandler = b.resourceUpdated
	cl := b.newClient(opts)
	cctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	s, err := cl.Connect(cctx, tr, nil)
	cancel()
	if err != nil {
		err = fmt.Errorf("connect: %w", err)
		b.down(err)
		return err
	}
	defer s.Close()
	defer b.closeCarrier(s)
	b.mu.Lock()
	b.session, b.lastErr = s, nil
	if ir := s.InitializeResult(); ir != nil {
		b.instr, b.caps = ir.Instructions, ir.Capabilities
	}
	b.mu.Unlock()
	defer b.down(errors.New("its session ended"))
	ended := make(chan error, 1)
	go func() { ended <- s.Wait() }()
	for {
		if err := b.list(s); err != nil {
			return err
		}
		select {
		case <-b.ctx.Done():
			return b.ctx.Err()
		case err := <-ended:
			if err == nil {
				err = errors.New("the gateway closed the session")
			}
			return err
		case <-b.changed:
		}
	}
}

// newClient is an MCP client of the aggregator's with opts.
func (b *backend) newClient(opts *mcp.ClientOptions) *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "agentmesh-aggregate", Version: b.a.cfg.Version}, opts)
}

// sharedOptions are the client options of a session to the service that
// belongs to no client: the backend's shared one, and a 2026-07-28
// request's own (requestlog.go).
func (b *backend) sharedOptions() *mcp.ClientOptions {
	return &mcp.ClientOptions{
		// A service's input_required result goes back to the client
		// that can answer it (routing.go), not answered here.
		MultiRoundTrip:              &mcp.MultiRoundTripOptions{Disabled: true},
		ProgressNotificationHandler: b.a.progress.forward,
		// Declared so that a service lists the tools it offers only to
		// clients that can sample or be asked (the lists are read on
		// the shared session); whether a client can is decided on its
		// own session. A request on such a session belongs to no
		// client: refused.
		Capabilities:                  sharedCapabilities(),
		CreateMessageWithToolsHandler: refuseSampling,
		ElicitationHandler:            refuseElicitation,
		Logger:                        b.a.log,
	}
}

// down records why the service has no session.
func (b *backend) down(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.session, b.lastErr = nil, err
}

// list reads the service's tools (every page, within ListTimeout), then
// its prompts, resources and resource templates (listMore), and puts them
// in the aggregated server; a list_changed of any kind lists them all
// again. A list that fails or times out
// ends the session: the service is then down until it answers again.
func (b *backend) list(s *mcp.ClientSession) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	var tools []*mcp.Tool
	for t, err := range s.Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("tools/list: %w", err)
		}
		tools = append(tools, t)
		if len(tools) > MaxToolsPerService {
			break
		}
	}
	b.a.setTools(b, validTools(b.a.log, b.svc.Name, tools))
	if err := b.listMore(s); err != nil {
		return err
	}
	b.settle()
	return nil
}

// call is the handler of the service's tool named tool: the call goes to
// the gateway with the gateway's own name for it, and its result or
// error comes back unchanged.
func (b *backend) call(tool string) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		s, end, err := b.sessionForRequest(ctx, req.Session, req.Params.Meta)
		if err != nil {
			return nil, err
		}
		defer end()
		meta, done := b.a.withProgress(ctx, req.Session, req.Params.Meta, forwardMeta(req.Params.Meta))
		defer done()
		// A 2026-07-28 client's retry answers what the service asked
		// in its input_required result: pass the answers on.
		p := &mcp.CallToolParams{Name: tool, Meta: meta, InputResponses: req.Params.InputResponses, RequestState: req.Params.RequestState}
		if len(req.Params.Arguments) > 0 {
			p.Arguments = req.Params.Arguments
		}
		res, err := s.CallTool(ctx, p)
		if err != nil {
			var je *jsonrpc.Error
			if errors.As(err, &je) {
				return nil, je // the gateway's answer, as it gave it
			}
			return nil, unavailable(b.svc.Name, err)
		}
		return res, nil
	}
}

// sessionFor returns the session to the service that carries a request
// of the aggregated client session cs (a call, a read, a get): the one
// place that routes requests to a service. A client session of a
// protocol before 2026-07-28 gets a session of its own, opened on its
// first request (clientsessions.go), so that what the service sends back
// outside the answer (its requests, log messages) reaches that client
// only; a 2026-07-28 client (or none) shares the backend's. An error is
// the answer to give the client.
func (b *backend) sessionFor(ctx context.Context, cs *mcp.ServerSession) (*mcp.ClientSession, error) {
	b.mu.Lock()
	s, why := b.session, b.lastErr
	b.mu.Unlock()
	if s == nil {
		return nil, unavailable(b.svc.Name, why)
	}
	if !ownSessions(cs) {
		return s, nil
	}
	return b.a.clients.session(ctx, b, cs)
}

// forwardMeta is what of a call's _meta goes on to the gateway: the
// caller's own keys (trace context among them), without the protocol's
// (io.modelcontextprotocol/…, which describe the client's session with
// the aggregator, not the aggregator's with the gateway: a 2026-07-28
// client's protocolVersion there fails the call at a gateway whose
// session negotiated an earlier version) and without progressToken
// (withProgress replaces it with one routed back to the client).
func forwardMeta(m mcp.Meta) mcp.Meta {
	var out mcp.Meta
	for k, v := range m {
		if strings.HasPrefix(k, "io.modelcontextprotocol/") || k == "progressToken" {
			continue
		}
		if out == nil {
			out = mcp.Meta{}
		}
		out[k] = v
	}
	return out
}
