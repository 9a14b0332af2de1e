package policy

import (
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// Approval holds. A grant with "approval": "group:NAME" allows its tool
// calls only once a member of that group has approved each one: the gateway
// holds the call, the coordinator records it as pending, and an admin node
// in the group approves or denies it (agentmesh approvals). A hold lasts
// "approval_timeout" (a Go duration, from MinApprovalTimeout to
// MaxApprovalTimeout; DefaultApprovalTimeout when absent) and then ends in
// a denial.
//
// An approval group lists who may approve: admin:NAME (an admin node by
// name; admin selectors are allowed in groups only) and tag:NAME (admin
// nodes carrying the tag). A group that names no admin node and no tag
// matches nobody who could approve, and is an error. A grant that requires
// approval may list only tools: resources, prompts, models and paths are
// not held, and a grant that seemed to hold them would mislead.

// Bounds of approval_timeout.
const (
	DefaultApprovalTimeout = 5 * time.Minute
	MinApprovalTimeout     = time.Second
	MaxApprovalTimeout     = 24 * time.Hour
)

// compileApproval checks grant i's approval fields and stores them in g.
func (c *compiler) compileApproval(p *Policy, rg *rawGrant, g *grant, path string) {
	if rg.approval == nil {
		if rg.approvalTimeout != nil {
			c.d.fail(rg.approvalTimeout.off, path+".approval_timeout", ErrInvalid, `approval_timeout without "approval"`)
		}
		return
	}
	a := rg.approval
	gs := c.groups[a.s]
	if gs == nil {
		c.d.fail(a.off, path+".approval", ErrInvalid, "approval %q: want group:NAME of a group defined in groups", a.s)
		return
	}
	members := c.expandGroup(gs, "")
	keys := make(map[nodeKey]bool, len(members))
	for _, k := range members {
		if k.kind == keyAdmin || k.kind == keyTag {
			keys[k] = true
		}
	}
	if len(keys) == 0 {
		c.d.fail(a.off, path+".approval", ErrInvalid, "approval group %q matches nobody who can approve: list admin:NAME or tag:NAME members", a.s)
		return
	}
	for k, l := range rg.lists {
		if l != nil && itemKind(k) != itemTool {
			c.d.fail(l.off, path+"."+itemFields[k], ErrInvalid, "a grant with an approval may list only tools (calls are what is held)")
			return
		}
	}
	if rg.lists[itemTool] == nil {
		c.d.fail(a.off, path+".approval", ErrInvalid, "a grant with an approval must list the tools whose calls it holds")
		return
	}
	g.approval, g.approvalTimeout = a.s, DefaultApprovalTimeout
	if t := rg.approvalTimeout; t != nil {
		d, err := time.ParseDuration(t.s)
		if err != nil || d < MinApprovalTimeout || d > MaxApprovalTimeout {
			c.d.fail(t.off, path+".approval_timeout", ErrInvalid, "approval_timeout %q: want a duration from %v to %v, such as \"10m\"", t.s, MinApprovalTimeout, MaxApprovalTimeout)
			return
		}
		g.approvalTimeout = d
	}
	if p.approvers == nil {
		p.approvers = make(map[string]map[nodeKey]bool)
	}
	p.approvers[a.s] = keys
}

// Approves reports whether approver, an admin node as the registry has it
// (name and tags), is a member of the approval group named group, which
// some grant of p names as its approval. Any other group, or a node that is
// not an admin, approves nothing.
func (p *Policy) Approves(group string, approver Node) bool {
	if p == nil || approver.Kind != identity.KindAdmin || approver.Name == "" {
		return false
	}
	keys := p.approvers[group]
	if keys[nodeKey{keyAdmin, string(approver.Name)}] {
		return true
	}
	for _, t := range approver.Tags {
		if keys[nodeKey{keyTag, string(t)}] {
			return true
		}
	}
	return false
}

// GrantApproval returns the approval group and timeout of grant i, numbered
// as in the whole document (as Decision.Grant is), or "" when it needs none
// or p has no such grant.
func (p *Policy) GrantApproval(i int) (string, time.Duration) {
	if p == nil {
		return "", 0
	}
	if p.grantNumbers != nil {
		found := false
		for j, n := range p.grantNumbers {
			if n == i {
				i, found = j, true
				break
			}
		}
		if !found {
			return "", 0
		}
	}
	if i < 0 || i >= len(p.grants) {
		return "", 0
	}
	return p.grants[i].approval, p.grants[i].approvalTimeout
}
