package gateway

import (
	"context"
	"net/http"

	"agentmesh/internal/audit"
	"agentmesh/internal/policy"
)

// Caller is a client identified by an Identifier rather than by a
// certificate of the mesh's CA: for example a tailnet node identified with
// WhoIs. The gateway admits a Caller when its policy links Node to the
// gateway's Self, and enforces every message against that policy exactly as
// on the certificate path.
type Caller struct {
	// Node is the caller as the policy sees it (name, kind, tags, user).
	Node policy.Node
	// Src is written as the source of the caller's audit events, such as
	// "tailnet:agent-1.example.ts.net".
	Src string
	// Key binds sessions and connections to the caller: a session created
	// by one Key is refused to every other. It must be stable for one
	// identity and unique across identities (a tailnet node's stable ID);
	// an empty Key is refused.
	Key string
	// Addr is the remote address the caller was identified on; an
	// Identifier may use it to identify the caller again in Recheck.
	Addr string
	// Policy, when set, decides the caller's requests instead of
	// State.Policy (a policy derived from the caller's own grants). Nil
	// uses State.Policy; if that is nil too, everything is denied.
	Policy *policy.Policy
}

// Identifier identifies clients that come without a TLS client certificate,
// on a transport that authenticates them itself (a tailnet). It must fail
// closed: any doubt is a refusal.
type Identifier interface {
	// Identify returns the caller behind r and "", or a stable reason code
	// (such as "whois_failed") for a refusal. With a reason, the caller may
	// be nil or identified as far as it could be: its Src is then written
	// as the source of the refusal's audit event; it is never admitted.
	Identify(r *http.Request, st *State) (*Caller, string)
	// Recheck identifies c again under st, after the transport reported a
	// change (a new netmap, changed capabilities). It returns the caller as
	// it is now and "", or a reason it lost access (as Identify).
	Recheck(ctx context.Context, c *Caller, st *State) (*Caller, string)
}

// callerPolicy returns the policy that decides c's requests under st.
func callerPolicy(c *Caller, st *State) *policy.Policy {
	if c.Policy != nil {
		return c.Policy
	}
	return st.Policy
}

// admitCaller says why c may not talk to this gateway under st, or "".
func admitCaller(c *Caller, st *State) string {
	if st.Stale {
		return ReasonStaleNetmap
	}
	if c.Key == "" {
		return ReasonUnknownPeer
	}
	pol := callerPolicy(c, st)
	if pol == nil {
		return ReasonNoPolicy
	}
	if !pol.Links(c.Node, st.Self) {
		return ReasonNotLinked
	}
	return ""
}

// callerState is st as seen by c: st with c's own policy, if it has one.
func callerState(c *Caller, st *State) *State {
	if c.Policy == nil {
		return st
	}
	cs := *st
	cs.Policy = c.Policy
	return &cs
}

// identifyCaller is identify for a request without TLS, through the
// configured Identifier.
func (g *Gateway) identifyCaller(r *http.Request, st *State) (*peerInfo, string, string) {
	c, src, reason := admitThrough(g.cfg.Identifier, r, st)
	if c == nil {
		return nil, src, reason
	}
	return &peerInfo{
		ref:   peerRef{key: c.Key, caller: c},
		peer:  Peer{Node: c.Node},
		state: callerState(c, st),
		addr:  r.RemoteAddr,
	}, c.Src, ""
}

// admitThrough identifies the client of r with ident and admits it under
// st. It returns the caller, or nil with the audit source as far as known
// and the refusal's reason.
func admitThrough(ident Identifier, r *http.Request, st *State) (*Caller, string, string) {
	c, reason := ident.Identify(r, st)
	if c == nil || reason != "" {
		if reason == "" {
			reason = ReasonUnknownPeer
		}
		src := ""
		if c != nil {
			src = c.Src
		}
		return nil, src, reason
	}
	if reason := admitCaller(c, st); reason != "" {
		return nil, c.Src, reason
	}
	return c, c.Src, ""
}

// Admitted is a client admitted by IdentifyRequest.
type Admitted struct {
	// Node is the client as the policy sees it.
	Node policy.Node
	// Src is the client's audit source (a SPIFFE ID, or an Identifier
	// caller's Src).
	Src string
	// State is what to decide the client's requests under: the State it
	// was admitted under, or a copy carrying the caller's own policy.
	State *State
}

// IdentifyRequest identifies the client of r and admits it under st, for
// servers that share the gateway's admission rules (the model gateway): by
// its verified certificate when r came over TLS, else through ident (nil:
// refused with no_certificate). It returns the admitted client and "", or
// the refusal's reason with Admitted.Src set as far as the client could be
// named. A nil st refuses with no_policy.
func IdentifyRequest(st *State, r *http.Request, ident Identifier) (Admitted, string) {
	if r.TLS == nil && ident != nil {
		if st == nil {
			return Admitted{}, ReasonNoPolicy
		}
		c, src, reason := admitThrough(ident, r, st)
		if c == nil {
			return Admitted{Src: src}, reason
		}
		return Admitted{Node: c.Node, Src: c.Src, State: callerState(c, st)}, ""
	}
	p, id, _, reason := identifyCert(st, r)
	a := Admitted{}
	if !id.IsZero() {
		a.Src = id.String()
	}
	if reason != "" {
		return a, reason
	}
	a.Node, a.State = p.Node, st
	return a, ""
}

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
func (g *Gateway) recheckCallers(ctx context.Context, st *State) {
	if g.cfg.Identifier == nil {
		return
	}
	// One Recheck per distinct caller key: many sessions share a node.
	fresh := make(map[string]*Caller)
	lost := make(map[string]string)
	check := func(c *Caller) (*Caller, string) {
		if nc, ok := fresh[c.Key]; ok {
			return nc, ""
		}
		if reason, ok := lost[c.Key]; ok {
			return nil, reason
		}
		nc, reason := g.cfg.Identifier.Recheck(ctx, c, st)
		if reason != "" {
			nc = nil
		}
		if nc != nil && nc.Key != c.Key {
			nc, reason = nil, ReasonUnknownPeer // another node now holds the address
		}
		if nc != nil {
			reason = admitCaller(nc, st)
		}
		if reason != "" || nc == nil {
			if reason == "" {
				reason = ReasonUnknownPeer
			}
			lost[c.Key] = reason
			return nil, reason
		}
		fresh[c.Key] = nc
		return nc, ""
	}
	for _, sess := range g.sessions.all() {
		c := sess.currentCaller()
		if c == nil {
			continue
		}
		nc, reason := check(c)
		if nc == nil {
			g.log.Info("closing session of caller that lost access", "peer", c.Src, "session", sess.id, "reason", reason)
			g.endSession(sess)
			if sess.id != "" {
				g.record(context.Background(), &audit.Event{
					Kind: audit.KindSession, Src: c.Src, Dst: dstOf(st),
					Session: sess.id, Decision: audit.Deny, Reason: reason, Outcome: "closed",
					PolicyVersion: versionOf(callerState(c, st)),
				})
			}
			continue
		}
		sess.setCaller(nc)
		sess.recheck(st)
	}
	for _, tc := range g.conns.snapshot() {
		p := tc.peer()
		if p == nil || p.caller == nil {
			continue
		}
		if _, reason := check(p.caller); reason != "" {
			g.closeConn(tc, p.caller.Src, reason, callerState(p.caller, st))
		}
	}
}

// visibleFor returns what the owner of s may see under st, and false when
// it may see nothing (no such peer, no policy).
func visibleFor(s *session, st *State) (policy.Visibility, bool) {
	if c := s.currentCaller(); c != nil {
		pol := callerPolicy(c, st)
		if pol == nil {
			return policy.Visibility{}, false
		}
		return pol.Visible(c.Node, st.Self), true
	}
	p, ok := st.Peers[s.owner.Name]
	if !ok || st.Policy == nil {
		return policy.Visibility{}, false
	}
	return st.Policy.Visible(p.Node, st.Self), true
}

// currentCaller returns the Identifier caller owning s as last checked, or
// nil for a certificate-identified session.
func (s *session) currentCaller() *Caller {
	if !s.hasCaller {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caller
}

// setCaller records c as the session's caller after a Recheck.
func (s *session) setCaller(c *Caller) {
	s.mu.Lock()
	s.caller = c
	s.mu.Unlock()
}
