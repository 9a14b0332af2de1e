package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// Limits on what one aggregated client session (or all of them) can make
// the aggregator hold.
const (
	// MaxSessionsPerClient is the most sessions of its own one aggregated
	// client session may have open to services at once.
	MaxSessionsPerClient = 64
	// MaxClientSessions is the most aggregated client sessions that may
	// have sessions of their own to services at once.
	MaxClientSessions = 256
	// MaxInFlightPerClient is the most requests (calls, reads, gets,
	// completions) one aggregated client session may have in flight
	// through the aggregator at once; more are refused with CodeLimited.
	MaxInFlightPerClient = 64
	// MaxAsksPerClient is the most server-to-client requests (sampling,
	// elicitation, roots/list) from services that may wait on one
	// aggregated client at once; more are refused to the service.
	MaxAsksPerClient = 16
)

// CodeLimited is the JSON-RPC error code of a request the aggregator
// refused because the client session already holds as much as it may
// (data.reason too_many_requests or too_many_sessions), as a gateway's
// -32042. It was not forwarded; the same request may succeed later.
const CodeLimited = -32042

// protocol2026 is the first MCP version without sessions: its requests
// carry what a session would in their _meta, and a service asks its
// client for input in the result (input_required), not by a request.
const protocol2026 = "2026-07-28"

// ownSessions reports whether requests of the aggregated client session
// ss go to services over sessions of its own: when ss is a session of a
// protocol before 2026-07-28 (whose services may send it requests and
// log messages that must reach it, and only it). A 2026-07-28 client has
// no session to attribute anything to: its requests share the backend's
// session, and what a service asks of it comes back in the result.
func ownSessions(ss *mcp.ServerSession) bool {
	if ss == nil {
		return false
	}
	ip := ss.InitializeParams()
	return ip != nil && ip.ProtocolVersion != "" && ip.ProtocolVersion < protocol2026
}

// limited is the CodeLimited error.
func limited(why reason.Code, msg string) error {
	data, _ := json.Marshal(map[string]reason.Code{"reason": why})
	return &jsonrpc.Error{Code: CodeLimited, Message: "aggregated endpoint: " + msg, Data: data}
}

// clients are the aggregated client sessions that have sessions of their
// own to services.
type clients struct {
	a  *Aggregator
	wg sync.WaitGroup // closes in progress

	mu     sync.Mutex
	closed bool
	by     map[*mcp.ServerSession]*client
}

// client is one aggregated client session's state.
type client struct {
	ss *mcp.ServerSession
	// inflight holds a token per request in flight; asks per
	// server-to-client request waiting on the client.
	inflight, asks chan struct{}

	// Guarded by clients.mu:
	level mcp.LoggingLevel         // set by logging/setLevel; "" before
	ups   map[*backend]*ownSession // its sessions, by service
	reqs  []context.Context        // contexts of its requests in flight
}

// ownSession is one client's session to one service.
type ownSession struct {
	ready  chan struct{} // closed once cs or err is set
	cs     *mcp.ClientSession
	client *mcp.Client
	err    error
	flip   bool // placeholder root present (see rootsChanged)
	opened time.Time
}

func newClients(a *Aggregator) *clients {
	return &clients{a: a, by: map[*mcp.ServerSession]*client{}}
}

// get returns ss's state, creating it (and a watch that closes its
// sessions when ss ends), or an error past MaxClientSessions.
func (c *clients) getLocked(ss *mcp.ServerSession) (*client, error) {
	if c.closed {
		return nil, errors.New("aggregated endpoint closed")
	}
	if cl := c.by[ss]; cl != nil {
		return cl, nil
	}
	if len(c.by) >= MaxClientSessions {
		return nil, limited(reason.TooManySessions, fmt.Sprintf("already %d client sessions with sessions of their own to services", MaxClientSessions))
	}
	cl := &client{ss: ss, inflight: make(chan struct{}, MaxInFlightPerClient), asks: make(chan struct{}, MaxAsksPerClient), ups: map[*backend]*ownSession{}}
	c.by[ss] = cl
	// Not waited for by close: ss is the server's, and may outlive the
	// aggregator; once closed, end has nothing left to close.
	go func() {
		ss.Wait()
		c.end(cl)
	}()
	return cl, nil
}

// end forgets cl and closes its sessions: its client session ended.
func (c *clients) end(cl *client) {
	c.mu.Lock()
	if c.by[cl.ss] == cl {
		delete(c.by, cl.ss)
	}
	ups := cl.ups
	cl.ups = map[*backend]*ownSession{}
	c.mu.Unlock()
	for _, up := range ups {
		c.closeUp(up)
	}
}

// closeUp closes up's session once it is open, without waiting on it
// (a close waits for the session's requests in flight).
func (c *clients) closeUp(up *ownSession) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		<-up.ready
		if up.cs != nil {
			up.cs.Close()
		}
	}()
}

// dropBackend closes every client's session to b: its service left.
func (c *clients) dropBackend(b *backend) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.by {
		if up := cl.ups[b]; up != nil {
			delete(cl.ups, b)
			c.closeUp(up)
		}
	}
}

// close closes every client's sessions and waits for the closes.
func (c *clients) close() {
	c.mu.Lock()
	c.closed = true
	var all []*ownSession
	for _, cl := range c.by {
		for _, up := range cl.ups {
			all = append(all, up)
		}
		cl.ups = map[*backend]*ownSession{}
	}
	c.mu.Unlock()
	for _, up := range all {
		c.closeUp(up)
	}
	c.wg.Wait()
}

// session returns ss's own session to b's service, opening it on the
// first request (concurrent first requests share one open).
func (c *clients) session(ctx context.Context, b *backend, ss *mcp.ServerSession) (*mcp.ClientSession, error) {
	c.mu.Lock()
	cl, err := c.getLocked(ss)
	if err != nil {
		c.mu.Unlock()
		return nil, err
	}
	up := cl.ups[b]
	if up == nil {
		if len(cl.ups) >= MaxSessionsPerClient {
			c.mu.Unlock()
			return nil, limited(reason.TooManySessions, fmt.Sprintf("this client session already has %d sessions to services", MaxSessionsPerClient))
		}
		up = &ownSession{ready: make(chan struct{}), opened: time.Now()}
		cl.ups[b] = up
		c.mu.Unlock()
		up.client, up.cs, up.err = c.open(b, cl)
		close(up.ready)
		c.mu.Lock()
		current := cl.ups[b] == up
		if up.err != nil && current {
			delete(cl.ups, b) // the next request tries again
		}
		if up.err == nil && current {
			c.wg.Add(1) // under mu: close has not begun waiting
		}
		c.mu.Unlock()
		if up.err == nil && !current {
			// The client or the service left, or the aggregator closed,
			// meanwhile (close then also closes it).
			up.cs.Close()
			return nil, unavailable(b.svc.Name, errors.New("its session was closed"))
		}
		if up.err == nil {
			go func() {
				defer c.wg.Done()
				up.cs.Wait()
				c.mu.Lock()
				// Still current: the service's side ended it (not the
				// client leaving, the service leaving or a close).
				ended := cl.ups[b] == up
				if ended {
					delete(cl.ups, b) // the next request reopens it
				}
				c.mu.Unlock()
				if ended {
					// Its subscriptions, made on it, ended with it.
					b.resubscribeOwn(cl.ss, time.Until(up.opened.Add(retryMin)))
				}
			}()
		}
	} else {
		c.mu.Unlock()
		select {
		case <-up.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if up.err != nil {
		return nil, unavailable(b.svc.Name, up.err)
	}
	return up.cs, nil
}

// open connects cl's own session to b's service: the protocol version
// cl's client asked for, its clientInfo, and only the roots, sampling
// and elicitation capabilities it declared, each answered by asking cl's
// client. It sets the client's log level on it, if the client set one.
func (c *clients) open(b *backend, cl *client) (*mcp.Client, *mcp.ClientSession, error) {
	ip := cl.ss.InitializeParams()
	impl := &mcp.Implementation{Name: "agentmesh-aggregate", Version: c.a.cfg.Version}
	if ip.ClientInfo != nil && ip.ClientInfo.Name != "" {
		impl = ip.ClientInfo
	}
	opts := &mcp.ClientOptions{
		Capabilities:                &mcp.ClientCapabilities{},
		MultiRoundTrip:              &mcp.MultiRoundTripOptions{Disabled: true},
		ProgressNotificationHandler: c.a.progress.forward,
		ResourceUpdatedHandler:      b.resourceUpdated, // resources.go
		LoggingMessageHandler: func(ctx context.Context, req *mcp.LoggingMessageRequest) {
			c.log(ctx, cl, b.svc.Name, req.Params)
		},
		Logger: c.a.log,
	}
	roots := false
	if caps := ip.Capabilities; caps != nil {
		if caps.RootsV2 != nil {
			roots = true
			opts.Capabilities.RootsV2 = &mcp.RootCapabilities{ListChanged: caps.RootsV2.ListChanged}
		}
		if caps.Sampling != nil {
			s := *caps.Sampling
			opts.Capabilities.Sampling = &s
			opts.CreateMessageWithToolsHandler = func(ctx context.Context, req *mcp.CreateMessageWithToolsRequest) (*mcp.CreateMessageWithToolsResult, error) {
				return ask(c, cl, ctx, func(ctx context.Context) (*mcp.CreateMessageWithToolsResult, error) {
					return cl.ss.CreateMessageWithTools(ctx, req.Params)
				})
			}
		}
		if caps.Elicitation != nil {
			e := *caps.Elicitation
			opts.Capabilities.Elicitation = &e
			opts.ElicitationHandler = func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return ask(c, cl, ctx, func(ctx context.Context) (*mcp.ElicitResult, error) {
					return cl.ss.Elicit(ctx, req.Params)
				})
			}
			opts.ElicitationCompleteHandler = func(ctx context.Context, req *mcp.ElicitationCompleteNotificationRequest) {
				if req.Params == nil {
					return
				}
				if err := cl.ss.NotifyElicitationComplete(ctx, req.Params); err != nil {
					c.a.log.Debug("aggregate: a service's elicitation/complete did not reach the client", "service", b.svc.Name, "err", err)
				}
			}
		}
	}
	client := mcp.NewClient(impl, opts)
	if opts.ElicitationHandler != nil {
		// The SDK's client checks an elicitation's schema before its
		// handler sees it, and refuses some the specification allows (a
		// titled multi-select whose items have a type and anyOf): pass
		// the request on as the service sent it; the client at the end
		// checks it, and the service checks the answer.
		client.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
				r, ok := req.(*mcp.ElicitRequest)
				if method != "elicitation/create" || !ok || r.Params == nil {
					return next(ctx, method, req)
				}
				return opts.ElicitationHandler(ctx, r)
			}
		})
	}
	if roots {
		// The SDK's client answers roots/list from its own list: answer
		// it with the aggregated client's instead.
		client.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
				if method != "roots/list" {
					return next(ctx, method, req)
				}
				p, _ := req.GetParams().(*mcp.ListRootsParams)
				return ask(c, cl, ctx, func(ctx context.Context) (*mcp.ListRootsResult, error) {
					return cl.ss.ListRoots(ctx, p)
				})
			}
		})
	}
	tr, err := c.a.transport(b.svc)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, c.a.cfg.ListTimeout)
	defer cancel()
	cs, err := client.Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: ip.ProtocolVersion})
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	c.mu.Lock()
	level := cl.level
	c.mu.Unlock()
	if level != "" {
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
			c.a.log.Warn("aggregate: the service refused the client's log level", "service", b.svc.Name, "err", err)
		}
	}
	return client, cs, nil
}

// ask forwards a service's request to cl's client, at most
// MaxAsksPerClient at once, on the stream of one of cl's requests in
// flight (over Streamable HTTP, a request related to none goes to the
// client's optional GET stream).
func ask[R any](c *clients, cl *client, ctx context.Context, f func(context.Context) (R, error)) (R, error) {
	var zero R
	select {
	case cl.asks <- struct{}{}:
		defer func() { <-cl.asks }()
	default:
		return zero, fmt.Errorf("the aggregated client already has %d requests from services waiting on it", MaxAsksPerClient)
	}
	ctx = c.relatedTo(ctx, cl)
	return f(ctx)
}

// relatedTo is ctx carrying the values of cl's latest request in flight,
// if any: over HTTP, what the aggregator sends cl goes on that request's
// stream.
func (c *clients) relatedTo(ctx context.Context, cl *client) context.Context {
	c.mu.Lock()
	var rel context.Context
	if n := len(cl.reqs); n > 0 {
		rel = cl.reqs[n-1]
	}
	c.mu.Unlock()
	if rel == nil {
		return ctx
	}
	return related{Context: ctx, values: rel}
}

// related is a context cancelled as Context is, whose values are first
// those of values: the SDK finds in them which request of the client a
// message belongs to.
type related struct {
	context.Context
	values context.Context
}

func (r related) Value(k any) any {
	if v := r.values.Value(k); v != nil {
		return v
	}
	return r.Context.Value(k)
}

// log passes a service's log message to cl's client, its logger named
// SERVICE or SERVICE/LOGGER. The client's session filters it by the
// level the client set.
func (c *clients) log(ctx context.Context, cl *client, svc string, p *mcp.LoggingMessageParams) {
	if p == nil {
		return
	}
	ctx = c.relatedTo(ctx, cl)
	if err := cl.ss.Log(ctx, serviceLog(svc, p)); err != nil {
		c.a.log.Debug("aggregate: a service's log message did not reach the client", "service", svc, "err", err)
	}
}

// sharedCapabilities are those the backend's own session declares:
// roots (always empty there), sampling and elicitation, so that its
// lists include the tools a service offers only to clients that have
// them. A client that has not gets its own session without them.
func sharedCapabilities() *mcp.ClientCapabilities {
	return &mcp.ClientCapabilities{
		RootsV2:     &mcp.RootCapabilities{},
		Sampling:    &mcp.SamplingCapabilities{},
		Elicitation: &mcp.ElicitationCapabilities{Form: &mcp.FormElicitationCapabilities{}, URL: &mcp.URLElicitationCapabilities{}},
	}
}

// errNoClient answers a service's request on the backend's own session,
// which is no client's: sent outside a call of a client before
// 2026-07-28, or to a 2026-07-28 client other than in an input_required
// result.
var errNoClient = &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "agentmesh aggregated endpoint: this session belongs to no single client; a request to the client must come on the client's own session or in an input_required result"}

func refuseSampling(context.Context, *mcp.CreateMessageWithToolsRequest) (*mcp.CreateMessageWithToolsResult, error) {
	return nil, errNoClient
}

func refuseElicitation(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	return nil, errNoClient
}
