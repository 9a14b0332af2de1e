package aggregate

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// MaxProgressRoutes is the most calls with a progress token routed at
// once, over every client; a call past it still runs, without progress.
const MaxProgressRoutes = 4096

// bounded are the methods a client's request holds a slot of
// MaxInFlightPerClient for while a service answers it.
var bounded = map[string]bool{
	"tools/call": true, "prompts/get": true, "resources/read": true, "completion/complete": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
}

// routing is the aggregated server's receiving middleware for what is
// not a list or a call: it bounds a client's requests in flight and
// remembers them (a service's request to the client goes out on the
// stream of one of them), applies a client's logging/setLevel to its
// sessions to services, and tells them when the client's roots change.
func (a *Aggregator) routing(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		ss, _ := req.GetSession().(*mcp.ServerSession)
		if ss == nil || isSessionless(ctx) {
			// A sessionless HTTP request's session is its own alone:
			// the endpoint's gate bounds them (sessionless.go).
			return next(ctx, method, req)
		}
		if !ownSessions(ss) && !bounded[method] {
			// A 2026-07-28 client session (stdio): bounded as any
			// client session is, with nothing else to route.
			return next(ctx, method, req)
		}
		c := a.clients
		switch {
		case bounded[method]:
			c.mu.Lock()
			cl, err := c.getLocked(ss)
			c.mu.Unlock()
			if err != nil {
				return nil, err
			}
			select {
			case cl.inflight <- struct{}{}:
			default:
				return nil, limited(reason.TooManyRequests, fmt.Sprintf("this client session already has %d requests in flight", MaxInFlightPerClient))
			}
			c.mu.Lock()
			cl.reqs = append(cl.reqs, ctx)
			c.mu.Unlock()
			defer func() {
				c.mu.Lock()
				for i, r := range cl.reqs {
					if r == ctx {
						cl.reqs = append(cl.reqs[:i], cl.reqs[i+1:]...)
						break
					}
				}
				c.mu.Unlock()
				<-cl.inflight
			}()
		case method == "logging/setLevel":
			res, err := next(ctx, method, req)
			if err != nil {
				return res, err
			}
			if p, ok := req.GetParams().(*mcp.SetLoggingLevelParams); ok && p != nil {
				c.setLevel(ctx, ss, p.Level)
			}
			return res, nil
		case method == "notifications/roots/list_changed":
			c.rootsChanged(ss)
		}
		return next(ctx, method, req)
	}
}

// setLevel records ss's log level for the sessions it opens later and
// sets it on those it has.
func (c *clients) setLevel(ctx context.Context, ss *mcp.ServerSession, level mcp.LoggingLevel) {
	c.mu.Lock()
	cl, err := c.getLocked(ss)
	if err != nil {
		c.mu.Unlock()
		return
	}
	cl.level = level
	var open []*mcp.ClientSession
	for _, up := range cl.ups {
		select {
		case <-up.ready:
			if up.cs != nil {
				open = append(open, up.cs)
			}
		default: // opening: it reads cl.level once connected
		}
	}
	c.mu.Unlock()
	for _, cs := range open {
		if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
			c.a.log.Warn("aggregate: a service refused the client's log level", "err", err)
		}
	}
}

// rootsChanged tells each service ss has a session to that its roots
// changed. The SDK's client sends roots/list_changed only when its own
// roots change, and its own roots are never read (roots/list is answered
// by asking the aggregated client): a placeholder root is added or
// removed in turn.
func (c *clients) rootsChanged(ss *mcp.ServerSession) {
	c.mu.Lock()
	cl := c.by[ss]
	type change struct {
		client *mcp.Client
		add    bool
	}
	var changes []change
	if cl != nil {
		for _, up := range cl.ups {
			select {
			case <-up.ready:
				if up.client != nil {
					up.flip = !up.flip
					changes = append(changes, change{up.client, up.flip})
				}
			default:
			}
		}
	}
	c.mu.Unlock()
	const placeholder = "agentmesh:roots-changed"
	for _, ch := range changes {
		if ch.add {
			ch.client.AddRoots(&mcp.Root{URI: placeholder})
		} else {
			ch.client.RemoveRoots(placeholder)
		}
	}
}

// progressRoutes maps the progress token the aggregator sends a service
// with a call to the client session and token of the client's call, and
// keeps the call's answer behind the progress the service sent before it
// (progressorder.go).
//
// A route outlives its call a little: progress the service sends after
// its answer may still be handled after the call returned. The last
// lingerRoutes finished routes are kept.
type progressRoutes struct {
	a        *Aggregator
	mu       sync.Mutex
	next     uint64
	m        map[string]*progressRoute
	finished []string // oldest first
}

// lingerRoutes is how many finished calls' progress routes are kept.
const lingerRoutes = 256

type progressRoute struct {
	ss    *mcp.ServerSession
	ctx   context.Context // the client's request's, for its stream
	token any
	// seen counts the route's progress notifications read from the
	// service, sent those forwarded (or dropped) by forward; guarded by
	// progressRoutes.mu. wake is signalled when sent grows.
	seen, sent int
	wake       chan struct{}
}

func newProgressRoutes(a *Aggregator) *progressRoutes {
	return &progressRoutes{a: a, m: map[string]*progressRoute{}}
}

// add routes the progress of a call of ss with the client's token to
// it: the call goes to the service with the returned token, unique in
// the aggregator (clients' tokens may collide on a shared session).
// done, called once the service answered and before the call returns,
// waits until every progress notification read before the answer has
// been forwarded (within ctx and progressFlushTimeout), then ends the
// route. The token is "" past MaxProgressRoutes.
func (p *progressRoutes) add(ctx context.Context, ss *mcp.ServerSession, token any) (string, func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ss == nil || len(p.m)-len(p.finished) >= MaxProgressRoutes {
		return "", func() {}
	}
	p.next++
	up := "agentmesh-" + strconv.FormatUint(p.next, 10)
	r := &progressRoute{ss: ss, ctx: context.WithoutCancel(ctx), token: token, wake: make(chan struct{}, 1)}
	p.m[up] = r
	return up, func() {
		p.flush(ctx, r)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.finished = append(p.finished, up)
		if len(p.finished) > lingerRoutes {
			delete(p.m, p.finished[0])
			p.finished = p.finished[1:]
		}
	}
}

// seen counts a progress notification for the route of up, read from a
// service and not yet handled.
func (p *progressRoutes) seen(up string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.m[up]; r != nil {
		r.seen++
	}
}

// flush waits until every progress notification seen for r has been
// forwarded, or ctx ends, or progressFlushTimeout passes.
func (p *progressRoutes) flush(ctx context.Context, r *progressRoute) {
	var timeout <-chan time.Time
	for {
		p.mu.Lock()
		seen, sent := r.seen, r.sent
		p.mu.Unlock()
		caughtUp := sent >= seen
		if caughtUp {
			return
		}
		if timeout == nil {
			t := time.NewTimer(progressFlushTimeout)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
			return
		case <-timeout:
			p.a.log.Warn("aggregate: a service's progress notifications were not all forwarded before its answer", "seen", seen, "forwarded", sent)
			return
		}
	}
}

// forward is the handler of a service's notifications/progress on any
// session: to the client whose call it belongs to, under its token.
// Progress for no call in flight is dropped.
func (p *progressRoutes) forward(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
	if req == nil || req.Params == nil {
		return
	}
	up, ok := req.Params.ProgressToken.(string)
	if !ok {
		return
	}
	p.mu.Lock()
	r, ok := p.m[up]
	p.mu.Unlock()
	if !ok {
		return
	}
	q := *req.Params
	q.Meta = nil
	q.ProgressToken = r.token
	if err := r.ss.NotifyProgress(r.ctx, &q); err != nil {
		p.a.log.Debug("aggregate: a service's progress did not reach the client", "err", err)
	}
	p.mu.Lock()
	r.sent++
	p.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// withProgress returns the _meta to send a service with a request of ss
// whose own _meta is meta, and the end of its progress route: the
// progress token replaced by one routed back to ss's client.
func (a *Aggregator) withProgress(ctx context.Context, ss *mcp.ServerSession, clientMeta, meta mcp.Meta) (mcp.Meta, func()) {
	token, ok := clientMeta["progressToken"]
	if !ok || token == nil {
		return meta, func() {}
	}
	up, done := a.progress.add(ctx, ss, token)
	if up == "" {
		return meta, done
	}
	if meta == nil {
		meta = mcp.Meta{}
	}
	meta["progressToken"] = up
	return meta, done
}
