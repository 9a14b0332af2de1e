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
// cut, as sessions of revoked peers are; stateless requests made with
// such a delegation are cut too (statelesscut.go). A caller identified by an
// Identifier (a tailnet) that presents a delegation is refused: there is
// no certificate to bind it to.

// delegated is a delegation a caller presented, verified, with its scope
// at this gateway's service.
type delegated struct {
	*admission.Delegated
	// scope is the delegation's scope at this gateway's service; scoped
	// says it has one (else every tool the policy allows).
	scope  *policy.ToolScope
	scoped bool
}

// newDelegated prepares d for the service self. It reports false for a
// scope whose globs do not compile.
func newDelegated(d *admission.Delegated, self identity.Name) (*delegated, bool) {
	out := &delegated{Delegated: d}
	if len(d.Claims.Tools) == 0 {
		return out, true
	}
	out.scoped = true
	var globs []string
	for _, t := range d.Claims.Tools {
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
	out.scope = scope
	return out, true
}

// admitDelegation reads the delegation x's caller presents, if any, and
// binds the request to it. It answers a refusal itself, audited with the
// delegation's reason code, and returns false when the request must stop.
func (g *Gateway) admitDelegation(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	p := x.peer
	d, why := p.state.Presented(r, admission.Admitted{ID: p.ref.id, Incarnation: p.ref.incarnation, Caller: p.ref.caller}, g.now())
	if why == "" && d == nil {
		return true
	}
	var dd *delegated
	if why == "" {
		var ok bool
		if dd, ok = newDelegated(d, p.state.Self.Name); !ok {
			why = reason.DelegationMalformed
		}
	}
	if why != "" {
		if r.Method != http.MethodPost {
			x.ev.Method = r.Method // a POST's method is in the unread body
		}
		g.log.Info("refused delegation", "peer", x.ev.Src, "reason", why)
		budget.SkipBody(w, r)
		g.deny(w, r, x, http.StatusForbidden, nil, CodeDenied, why)
		return false
	}
	p.ref.delegation, p.ref.del = d.Claims.ID(), dd
	x.ev.OnBehalfOf = d.OnBehalfOf
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
	return st.CheckGrantors(d.Delegated, func(src policy.Node, del *policy.Delegation) bool {
		r := q
		r.req.Src, r.req.Delegation = src, del
		var v verdict
		return r.ask(st.Policy, &v).Allow
	})
}

// viewOf is what node, with the delegation d (nil: none), may see of st's
// gateway under pol: for a delegation, what the caller may see for the
// person, the person and every agent before the caller may see too, and
// the scope covers.
func viewOf(st *admission.State, pol *policy.Policy, node policy.Node, d *delegated) policy.Visibility {
	if d == nil {
		return pol.Visible(node, st.Self)
	}
	var others []policy.Visibility
	if !st.Grantors(d.Delegated, func(n policy.Node, pd *policy.Delegation) bool {
		others = append(others, pol.VisibleFor(n, st.Self, pd))
		return true
	}) {
		return policy.Visibility{} // an agent of the chain is gone: nothing
	}
	return pol.VisibleFor(node, st.Self, d.Policy).Restrict(others, d.scope, d.scoped)
}

// visibility is viewOf for an admitted peer.
func (p *peerInfo) visibility() policy.Visibility {
	return viewOf(p.state, p.state.Policy, p.node, p.ref.del)
}

// lapse is when d stops being accepted: its expiry plus the clock skew
// gateways allow.
func (d *delegated) lapse() time.Time {
	return time.Unix(d.Claims.Expires, 0).Add(delegation.DefaultSkew)
}

// delegationLapsed ends sess when the delegation it was opened with no
// longer holds under st (expired, revoked, an agent of its chain gone),
// audits it, and reports whether it did.
func (g *Gateway) delegationLapsed(sess *session, st *admission.State) bool {
	if sess.del == nil {
		return false
	}
	why := st.DelegationStanding(sess.del.Claims, g.now())
	if why == "" || !g.sessions.remove(sess) {
		return false
	}
	g.log.Info("closing session whose delegation lapsed", "peer", sess.owner.String(), "session", sess.id, "reason", why)
	// Recorded first: the requests in flight are told its id (cut.go). An
	// expiry keeps the id its streams already ended with.
	id := audit.NewID()
	if why == reason.DelegationExpired && sess.expiryEvent != "" {
		id = sess.expiryEvent
	}
	g.record(context.Background(), &audit.Event{
		ID:   id,
		Kind: audit.KindSession, Src: sess.owner.String(), Dst: st.Dst(), User: sess.user,
		Session: sess.id, Decision: audit.Deny, Reason: why, Outcome: audit.OutcomeClosed,
		PolicyVersion: st.PolicyVersion(), OnBehalfOf: sess.del.OnBehalfOf,
	})
	sess.cutFor(&cutError{why: why, eventID: id})
	g.up.closeSession(sess)
	return true
}
