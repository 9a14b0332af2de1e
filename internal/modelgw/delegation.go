package modelgw

import (
	"net/http"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Delegation at the model gateway, as at the MCP gateway (package
// gateway): a request presenting a delegation (package delegation) is
// verified against the caller's certificate and the netmap's revocations,
// decided by the policy with the delegation, and allowed only if the
// person, and each agent before the caller in the chain, may make it too.
// A delegation scoped to tools (Claims.Tools) covers no model request
// (delegation_out_of_scope). The model list is filtered the same way. A
// request in progress (a stream) whose delegation is revoked is cut on
// Update, as one of a revoked peer.

// admitDelegation reads the delegation x's caller presents, if any. It
// answers a refusal itself and returns false when the request must stop.
func (g *Gateway) admitDelegation(w http.ResponseWriter, r *http.Request, x *request, peer admission.Admitted) bool {
	d, why := x.st.Presented(r, peer, g.now())
	if why != "" {
		budget.SkipBody(w, r)
		g.refuse(w, r, x, refusal{http.StatusForbidden, why, audit.OutcomeDenied, "delegation refused (" + string(why) + ")"})
		return false
	}
	if d != nil {
		x.del = d
		x.ev.OnBehalfOf = d.OnBehalfOf
	}
	return true
}

// checkDelegated says why x, which the policy allowed for the caller, is
// refused for its delegation, or "" (also for a request made without one).
func (g *Gateway) checkDelegated(x *request) reason.Code {
	d := x.del
	if d == nil {
		return ""
	}
	if len(d.Claims.Tools) > 0 {
		return reason.DelegationOutOfScope
	}
	if x.filterList {
		return "" // filtered by visibility
	}
	return x.st.CheckGrantors(d, func(src policy.Node, del *policy.Delegation) bool {
		r := x.decide
		r.Src, r.Delegation = src, del
		return x.st.Policy.Decide(r).Allow
	})
}

// visibility is what x's caller may see: with a delegation, what it may
// see for the person that the person and every agent before it in the
// chain may see too.
func (g *Gateway) visibility(x *request) policy.Visibility {
	pol := x.st.Policy
	if x.del == nil {
		return pol.Visible(x.src, x.st.Self)
	}
	var others []policy.Visibility
	if !x.st.Grantors(x.del, func(n policy.Node, pd *policy.Delegation) bool {
		others = append(others, pol.VisibleFor(n, x.st.Self, pd))
		return true
	}) {
		return policy.Visibility{}
	}
	return pol.VisibleFor(x.src, x.st.Self, x.del.Policy).Restrict(others, nil, false)
}
