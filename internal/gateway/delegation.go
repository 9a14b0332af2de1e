package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Delegation at the gateway: a caller that acts for a person presents a
// delegation (package delegation) in the Agentmesh-Delegation header of
// each request. The gateway verifies it against the mesh CA, the caller's
// own certificate (identity and incarnation) and the netmap's
// revocations, then allows a request only if all of these do:
//
//   - the policy allows the caller with the delegation in the request
//     (grants with on_behalf_of, and whens reading on_behalf_of and
//     delegation);
//   - the delegation's scope covers the item (a scoped delegation covers
//     only the tools it names for this service, delegation_out_of_scope);
//   - the policy allows the person (a policy.Node with only User set),
//     and every agent of the chain before the caller, the same request
//     (delegation_exceeds_grantor): a delegation never gives more than
//     its grantors have.
//
// Lists are filtered the same way. Sessions, stateless streams and tasks
// are bound to the delegation as to the identity: a session opened with
// one delegation is refused with another or none, and the other way
// round. On every netmap (Update) and every idle sweep, open sessions
// whose delegation has expired or been revoked are ended, their streams
// cut, as sessions of revoked peers are. A caller identified by an
// Identifier (a tailnet) that presents a delegation is refused: there is
// no certificate to bind it to.

// delegated is a delegation a caller presented, verified.
type delegated struct {
	claims *delegation.Claims
	// pol is what the policy sees of it.
	pol *policy.Delegation
	// onBehalfOf is what audit events record of it.
	onBehalfOf *audit.OnBehalfOf
	// scope is the delegation's scope at this gateway's service; scoped
	// says it has one (else every tool the policy allows).
	scope  *policy.ToolScope
	scoped bool
}

// newDelegated prepares verified claims c for the service self. It
// reports false for a scope whose globs do not compile.
func newDelegated(c *delegation.Claims, self identity.Name) (*delegated, bool) {
	parties := c.Parties()
	d := &delegated{
		claims:     c,
		pol:        &policy.Delegation{User: c.User, Chain: parties, Depth: c.Depth()},
		onBehalfOf: &audit.OnBehalfOf{User: c.User, Chain: parties, Delegation: c.ID()},
	}
	if len(c.Tools) == 0 {
		return d, true
	}
	d.scoped = true
	var globs []string
	for _, t := range c.Tools {
		svc, glob, err := delegation.SplitTool(t)
		if err != nil {
			return nil, false
		}
		if svc == self {
			globs = append(globs, glob)
		}
	}
	scope, err := policy.NewToolScope(globs)
	if err != nil {
		return nil, false
	}
	d.scope = scope
	return d, true
}

// admitDelegation reads the delegation x's caller presents, if any, and
// binds the request to it. It answers a refusal itself, audited with the
// delegation's reason code, and returns false when the request must stop.
func (g *Gateway) admitDelegation(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	vals := r.Header.Values(delegation.Header)
	if len(vals) == 0 {
		return true
	}
	p := x.peer
	refuse := func(why reason.Code) bool {
		if r.Method != http.MethodPost {
			x.ev.Method = r.Method // a POST's method is in the unread body
		}
		g.log.Info("refused delegation", "peer", x.ev.Src, "reason", why)
		budget.SkipBody(w, r)
		g.deny(w, r, x, http.StatusForbidden, nil, CodeDenied, why)
		return false
	}
	if p.ref.caller != nil {
		// Nothing binds a delegation to a caller without a certificate.
		return refuse(reason.DelegationWrongAgent)
	}
	if len(vals) != 1 {
		return refuse(reason.DelegationMalformed)
	}
	c, why := p.state.Delegation(vals[0], p.ref.id, p.ref.incarnation, g.now())
	if why != "" {
		return refuse(why)
	}
	d, ok := newDelegated(c, p.state.Self.Name)
	if !ok {
		return refuse(reason.DelegationMalformed)
	}
	p.ref.delegation, p.ref.del = c.ID(), d
	x.ev.OnBehalfOf = d.onBehalfOf
	return true
}

// grantor is the policy's view of the person at the root of d: a node
// that only its User names, as a person's own device on a tailnet.
func (d *delegated) grantor() policy.Node {
	return policy.Node{Kind: identity.KindAgent, User: d.claims.User}
}

// intermediates calls f with each agent of d's chain before the caller,
// as the policy sees it, and the delegation it acts under; f returns
// false to stop. It reports false when one of them is not an active
// peer (its standing is checked on every netmap, so this is a race).
func (d *delegated) intermediates(st *admission.State, f func(policy.Node, *policy.Delegation) bool) bool {
	c := d.claims
	for i, l := range c.Chain[:len(c.Chain)-1] {
		id, err := identity.Parse(l.To)
		if err != nil {
			return false
		}
		peer, ok := st.Peers[id.Name]
		if !ok || peer.ID != id {
			return false
		}
		pd := &policy.Delegation{User: c.User, Chain: d.pol.Chain[:i+2], Depth: i + 1}
		if !f(peer.Node, pd) {
			return true
		}
	}
	return true
}

// check says why the delegated request q, which the policy allowed for
// the caller, is refused after all, or "": outside the delegation's
// scope, or beyond the rights of the person or of an agent before the
// caller in the chain.
func (d *delegated) check(st *admission.State, q question) reason.Code {
	if d.scoped && (q.req.Action != policy.ActionTool || !d.scope.Match(q.req.Tool)) {
		return reason.DelegationOutOfScope
	}
	pol := st.Policy
	allows := func(src policy.Node, del *policy.Delegation) bool {
		r := q
		r.req.Src, r.req.Delegation = src, del
		var v verdict
		return r.ask(pol, &v).Allow
	}
	if !allows(d.grantor(), nil) {
		return reason.DelegationExceedsGrantor
	}
	exceeds := false
	if !d.intermediates(st, func(n policy.Node, pd *policy.Delegation) bool {
		exceeds = !allows(n, pd)
		return !exceeds
	}) {
		return reason.DelegationRevoked
	}
	if exceeds {
		return reason.DelegationExceedsGrantor
	}
	return ""
}

// viewOf is what node, with the delegation d (nil: none), may see of st's
// gateway: for a delegation, what the caller may see for the person, the
// person and every agent before the caller may see too, and the scope
// covers.
func viewOf(st *admission.State, pol *policy.Policy, node policy.Node, d *delegated) policy.Visibility {
	if d == nil {
		return pol.Visible(node, st.Self)
	}
	others := []policy.Visibility{pol.Visible(d.grantor(), st.Self)}
	if !d.intermediates(st, func(n policy.Node, pd *policy.Delegation) bool {
		others = append(others, pol.VisibleFor(n, st.Self, pd))
		return true
	}) {
		return policy.Visibility{} // an agent of the chain is gone: nothing
	}
	return pol.VisibleFor(node, st.Self, d.pol).Restrict(others, d.scope, d.scoped)
}

// visibility is viewOf for an admitted peer.
func (p *peerInfo) visibility() policy.Visibility {
	return viewOf(p.state, p.state.Policy, p.node, p.ref.del)
}

// lapse is when d stops being accepted: its expiry plus the clock skew
// gateways allow.
func (d *delegated) lapse() time.Time {
	return time.Unix(d.claims.Expires, 0).Add(delegation.DefaultSkew)
}

// delegationLapsed ends sess when the delegation it was opened with no
// longer holds under st (expired, revoked, an agent of its chain gone),
// audits it, and reports whether it did.
func (g *Gateway) delegationLapsed(sess *session, st *admission.State) bool {
	if sess.del == nil {
		return false
	}
	why := st.DelegationStanding(sess.del.claims, g.now())
	if why == "" || !g.sessions.remove(sess) {
		return false
	}
	g.log.Info("closing session whose delegation lapsed", "peer", sess.owner.String(), "session", sess.id, "reason", why)
	sess.cut()
	g.up.closeSession(sess)
	g.record(context.Background(), &audit.Event{
		Kind: audit.KindSession, Src: sess.owner.String(), Dst: st.Dst(),
		Session: sess.id, Decision: audit.Deny, Reason: why, Outcome: audit.OutcomeClosed,
		PolicyVersion: st.PolicyVersion(), OnBehalfOf: sess.del.onBehalfOf,
	})
	return true
}
