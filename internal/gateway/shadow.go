package gateway

import (
	"strconv"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Shadow mode: st.Shadow, a candidate policy applied with `agentmesh policy
// shadow apply`, is asked the same question as the active policy, right
// after it, on every request the active policy decides. Its answer never
// reaches enforcement: decide keeps the active decision whatever happens
// here, and a failed evaluation (a panic in the shadow's evaluation, or a
// shadow that did not compile at this node) is recorded as the shadow
// decision "error". Its cost is one more Decide, bounded as the active
// one is (the policy's own limits on `when` evaluation); list filtering,
// pins and approvals are the active policy's alone.

// shadowOf asks st's shadow policy q, and returns its decision when it
// differs from the active decision active (allow against deny, or an
// error), nil otherwise or when there is no shadow.
func shadowOf(st *admission.State, q question, active policy.Decision) *audit.ShadowDecision {
	if st.Shadow == nil {
		if st.ShadowFailed == "" {
			return nil
		}
		return &audit.ShadowDecision{Decision: audit.ShadowError, Reason: reason.Internal, PolicyVersion: st.ShadowFailed}
	}
	d, ok := askShadow(st.Shadow, q)
	if !ok {
		return &audit.ShadowDecision{Decision: audit.ShadowError, Reason: reason.Internal, PolicyVersion: st.Shadow.Version()}
	}
	if d.Allow == active.Allow {
		return nil
	}
	s := &audit.ShadowDecision{Decision: audit.Deny, Reason: d.Reason, PolicyVersion: d.Version}
	if d.Allow {
		s.Decision = audit.Allow
	}
	if s.Reason == "" {
		s.Reason = reason.NotGranted
		if d.Allow {
			s.Reason = reason.Allowed
		}
	}
	if d.Grant >= 0 {
		s.Rule = strconv.Itoa(d.Grant)
	}
	return s
}

// askShadow asks pol q as decide asks the active policy, on a scratch
// verdict; ok is false when the evaluation panicked.
func askShadow(pol *policy.Policy, q question) (d policy.Decision, ok bool) {
	defer func() {
		if recover() != nil {
			d, ok = policy.Decision{}, false
		}
	}()
	var scratch verdict
	return q.ask(pol, &scratch), true
}
