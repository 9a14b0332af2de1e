package gateway

import (
	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// basisOf is what the policy's decision on q depended on, for the request
// event (admission.Basis). A question about several resources (a
// subscriptions/listen) is decided as several, while the event names one:
// its basis says it cannot be judged again.
func basisOf(q *question, m *mcpwire.Message, pol *policy.Policy) *audit.Basis {
	b := admission.Basis(&q.req, m.Method, pol)
	if len(q.more) > 0 && b.Unjudged == "" {
		b.Unjudged = audit.BasisSeveralItems
	}
	return b
}
