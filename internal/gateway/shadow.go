package gateway

import (
	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// Shadow mode: st.Shadow, a candidate policy applied with `agentmesh policy
// shadow apply`, is asked the same question as the active policy, right
// after it, on every request the active policy decides
// (admission.State.ShadowOf). Its answer never reaches enforcement: decide
// keeps the active decision whatever happens here. List filtering, pins
// and approvals are the active policy's alone.

// shadowOf asks st's shadow policy q, on a scratch verdict, and returns its
// decision when it differs from the active decision active.
func shadowOf(st *admission.State, q question, active policy.Decision) *audit.ShadowDecision {
	return st.ShadowOf(active, func(pol *policy.Policy) policy.Decision {
		var scratch verdict
		return q.ask(pol, &scratch)
	})
}
