package policy

import "github.com/agentmesh/agentmesh/internal/reason"

// ToolAccess says whether a source may call one tool at a destination,
// decided as a list is filtered: without the call's arguments. The zero
// ToolAccess denies.
type ToolAccess struct {
	// Allow: some grant covers a call of the tool. With Conditional, a
	// grant's when needs the call's arguments (it failed to evaluate
	// without them), so the tool is granted and each call decided when
	// made; a when that is false without arguments denies.
	Allow       bool
	Conditional bool
	// Approval, for an allowed tool, is the group that must approve each
	// call (see Decision.Approval).
	Approval string
	// Reason is the decision's reason code (reason.Allowed,
	// reason.WhenError for a conditional allow, reason.NoGrant, ...).
	Reason reason.Code
}

// MayCallTool answers whether src may call the tool named tool at dst:
// what the web console's services page and 'agentmesh services' show. A
// nil Policy denies. Tool pins are not considered: a pinned tool whose
// definition changed is refused by its gateway whatever this says
// (ServerPins.CheckTool).
func (p *Policy) MayCallTool(src, dst Node, tool string) ToolAccess {
	d := p.Decide(Request{Src: src, Dst: dst, Action: ActionTool, Method: "tools/call", Tool: tool})
	switch {
	case d.Allow:
		return ToolAccess{Allow: true, Approval: d.Approval, Reason: d.Reason}
	case d.Reason == reason.WhenError:
		return ToolAccess{Allow: true, Conditional: true, Reason: d.Reason}
	}
	return ToolAccess{Reason: d.Reason}
}
