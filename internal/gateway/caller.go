package gateway

import (
	"context"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Recheck identifies every open session's and connection's Identifier
// caller again under the current state: callers that lost access have their
// connections and sessions closed (audited as on Update); sessions whose
// visible lists changed are sent list_changed. Call it when the transport
// reports that identities or capabilities changed (a tailnet's netmap).
// Certificate-identified sessions are re-checked by Update instead. It
// returns when every notification has been handed to the sessions.
func (g *Gateway) Recheck(ctx context.Context) {
	if g.cfg.Identifier == nil {
		return
	}
	st := g.state.Load()
	g.recheckCallers(ctx, st)
}

// recheckCallers re-checks the Identifier callers of open connections and
// sessions under st.
func (g *Gateway) recheckCallers(ctx context.Context, st *admission.State) {
	if g.cfg.Identifier == nil {
		return
	}
	// One Recheck per distinct caller key: many sessions share a node.
	fresh := make(map[string]*admission.Caller)
	lost := make(map[string]reason.Code)
	check := func(c *admission.Caller) (*admission.Caller, reason.Code) {
		if nc, ok := fresh[c.Key]; ok {
			return nc, ""
		}
		if why, ok := lost[c.Key]; ok {
			return nil, why
		}
		nc, why := admission.Recheck(ctx, g.cfg.Identifier, c, st)
		if why != "" {
			lost[c.Key] = why
			return nil, why
		}
		fresh[c.Key] = nc
		return nc, ""
	}
	for _, sess := range g.sessions.all() {
		c := sess.currentCaller()
		if c == nil {
			continue
		}
		nc, why := check(c)
		if nc == nil {
			g.log.Info("closing session of caller that lost access", "peer", c.Src, "session", sess.id, "reason", why)
			var cause error
			if sess.id != "" {
				cst := st.For(c)
				ev := &audit.Event{
					ID:   audit.NewID(),
					Kind: audit.KindSession, Src: c.Src, Dst: st.Dst(), User: c.Node.User,
					Session: sess.id, Decision: audit.Deny, Reason: why, Outcome: audit.OutcomeClosed,
					PolicyVersion: cst.PolicyVersion(),
				}
				g.record(context.Background(), ev)
				cause = &cutError{why: why, eventID: ev.ID}
			}
			g.endSessionFor(sess, cause)
			continue
		}
		sess.setCaller(nc)
		sess.recheck(st)
	}
	var cuts []connCut
	for _, tc := range g.conns.snapshot() {
		p := tc.peer()
		if p == nil || p.caller == nil {
			continue
		}
		if _, why := check(p.caller); why != "" {
			cuts = append(cuts, connCut{tc, p.caller.Src, why, st.For(p.caller)})
		}
	}
	g.closeConns(cuts)
}

// visibleFor returns what the owner of s may see under st, and false when
// it may see nothing (no such peer, no policy).
func visibleFor(s *session, st *admission.State) (policy.Visibility, bool) {
	if c := s.currentCaller(); c != nil {
		pol := st.For(c).Policy
		if pol == nil {
			return policy.Visibility{}, false
		}
		return pol.Visible(c.Node, st.Self), true
	}
	p, ok := st.Peers[s.owner.Name]
	if !ok || st.Policy == nil {
		return policy.Visibility{}, false
	}
	return viewOf(st, st.Policy, p.Node, s.del), true
}

// currentCaller returns the Identifier caller owning s as last checked, or
// nil for a certificate-identified session.
func (s *session) currentCaller() *admission.Caller {
	if !s.hasCaller {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caller
}

// setCaller records c as the session's caller after a Recheck.
func (s *session) setCaller(c *admission.Caller) {
	s.mu.Lock()
	s.caller = c
	s.mu.Unlock()
}
