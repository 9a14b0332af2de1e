package admission

import (
	"strconv"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// ShadowOf is shadow mode's one rule, for every gateway: s's shadow policy
// is asked (by ask, the same question the active policy was asked, with
// the same inputs) right after the active decision active, and its
// decision is returned when it differs (allow against deny), nil when it
// agrees or s has no shadow. It never changes active: the caller enforces
// that whatever this returns. A failed evaluation (ask panics) or a shadow
// that did not compile at the node (ShadowFailed) is the shadow decision
// audit.ShadowError. The cost is one more Decide, bounded as the active
// one is.
func (s *State) ShadowOf(active policy.Decision, ask func(*policy.Policy) policy.Decision) *audit.ShadowDecision {
	if s == nil || s.Shadow == nil {
		if s == nil || s.ShadowFailed == "" {
			return nil
		}
		return &audit.ShadowDecision{Decision: audit.ShadowError, Reason: reason.Internal, PolicyVersion: s.ShadowFailed}
	}
	d, ok := askShadow(s.Shadow, ask)
	if !ok {
		return &audit.ShadowDecision{Decision: audit.ShadowError, Reason: reason.Internal, PolicyVersion: s.Shadow.Version()}
	}
	if d.Allow == active.Allow {
		return nil
	}
	out := &audit.ShadowDecision{Decision: audit.Deny, Reason: d.Reason, PolicyVersion: d.Version}
	if d.Allow {
		out.Decision = audit.Allow
	}
	if out.Reason == "" {
		out.Reason = reason.NotGranted
		if d.Allow {
			out.Reason = reason.Allowed
		}
	}
	if d.Grant >= 0 {
		out.Rule = strconv.Itoa(d.Grant)
	}
	return out
}

// askShadow asks pol with ask; ok is false when the evaluation panicked.
func askShadow(pol *policy.Policy, ask func(*policy.Policy) policy.Decision) (d policy.Decision, ok bool) {
	defer func() {
		if recover() != nil {
			d, ok = policy.Decision{}, false
		}
	}()
	return ask(pol), true
}
