package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Cutting stateless delegated calls. A request in a session is cut with
// its session when the session's delegation lapses (delegation.go), a
// stream without a session with its caller's stateless pseudo session. A
// plain stateless request (MCP 2026-07-28, no Mcp-Session-Id) belongs to
// neither: the gateway keeps those made with a delegation in a registry
// while they are in flight, and cuts each whose delegation no longer holds
// (revoked, its person revoked, an agent of its chain gone) on every
// netmap, and each at its delegation's expiry. Every cut is recorded once,
// by a session event with no session id (the caller's stateless
// requests) naming the request's method and tool, the reason and the
// delegation, before the request is cancelled with that event as its
// cause: the client gets the error of cut.go, naming delegation_revoked
// or delegation_expired. The registry holds what the gateway's request
// limits already bound (requests in flight), at O(1) per request.

// statelessCalls are the delegated requests in flight in no session.
type statelessCalls struct {
	mu   sync.Mutex
	reqs map[*statelessCall]struct{}
}

// statelessCall is one of them.
type statelessCall struct {
	ctx    context.Context // the request's: ended once it is cut or over
	cancel context.CancelCauseFunc
	ref    peerRef // who made it, with its delegation
	method string
	tool   string
	expiry *time.Timer
	cut    bool // guarded by statelessCalls.mu: recorded and cancelled once, never once over
}

// trackStateless registers the request of x, whose context is ctx
// (cancelled by cancel), if it is made with a delegation in no session; it
// is cut at the delegation's expiry. The returned func forgets it.
func (g *Gateway) trackStateless(ctx context.Context, cancel context.CancelCauseFunc, x *exchange) func() {
	if x.sess != nil || x.streamSess != nil || x.peer == nil || x.peer.ref.del == nil {
		return func() {}
	}
	t := &g.stateless
	q := &statelessCall{ctx: ctx, cancel: cancel, ref: x.peer.ref, method: x.ev.Method, tool: x.ev.Tool}
	t.mu.Lock()
	if t.reqs == nil {
		t.reqs = make(map[*statelessCall]struct{})
	}
	t.reqs[q] = struct{}{}
	// By the gateway's clock, as a session's expiry (newSession).
	q.expiry = time.AfterFunc(q.ref.del.lapse().Sub(g.now()), func() {
		g.cutStateless([]*statelessCall{q}, reason.DelegationExpired, g.state.Load())
	})
	t.mu.Unlock()
	// A netmap that arrived between the request's admission and now did
	// not find it registered: judge it once more under the state in force
	// (only then: its expiry is the timer's).
	if st := g.state.Load(); st != nil && st != x.peer.state {
		if why := st.DelegationStanding(q.ref.del.Claims, g.now()); why != "" {
			g.cutStateless([]*statelessCall{q}, why, st)
		}
	}
	return func() {
		q.expiry.Stop()
		t.mu.Lock()
		delete(t.reqs, q)
		q.cut = true // over: an expiry firing now records nothing
		t.mu.Unlock()
	}
}

// lapsedStateless cuts the stateless delegated requests whose delegation
// no longer holds under st.
func (g *Gateway) lapsedStateless(st *admission.State) {
	t := &g.stateless
	now := g.now()
	byWhy := map[reason.Code][]*statelessCall{}
	t.mu.Lock()
	for q := range t.reqs {
		if why := st.DelegationStanding(q.ref.del.Claims, now); why != "" {
			byWhy[why] = append(byWhy[why], q)
		}
	}
	t.mu.Unlock()
	for why, qs := range byWhy {
		g.cutStateless(qs, why, st)
	}
}

// cutStateless records the cut of each of qs not cut yet and not already
// over (or cut for another reason, its connection closed), then cancels
// it with the event as its cause.
func (g *Gateway) cutStateless(qs []*statelessCall, why reason.Code, st *admission.State) {
	if st == nil {
		st = &admission.State{}
	}
	t := &g.stateless
	for _, q := range qs {
		t.mu.Lock()
		skip := q.cut || q.ctx.Err() != nil
		q.cut = true
		t.mu.Unlock()
		if skip {
			continue
		}
		g.log.Info("cutting a stateless request whose delegation lapsed", "peer", q.ref.id.String(), "method", q.method, "reason", why)
		// Recorded first: the request is told its id (cut.go).
		id := audit.NewID()
		g.record(context.Background(), &audit.Event{
			ID:   id,
			Kind: audit.KindSession, Src: q.ref.id.String(), Dst: st.Dst(), User: q.ref.user,
			Method: q.method, Tool: q.tool,
			Decision: audit.Deny, Reason: why, Outcome: audit.OutcomeClosed,
			PolicyVersion: st.PolicyVersion(), OnBehalfOf: q.ref.del.OnBehalfOf,
		})
		q.cancel(&cutError{why: why, eventID: id})
	}
}
