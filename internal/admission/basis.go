package admission

import (
	"slices"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// Basis is what pol's decision on r depended on beyond the fields of the
// request's audit event, whose Method is eventMethod (audit.Basis): the
// tags of both sides as the registry gave them, the method the policy
// saw when it is not the event's, the HTTP method and path of a model
// request, and the argument values at the paths pol keeps
// (policy.AuditArgPaths: what its whens read, never secret-named keys),
// bounded by audit.MaxBasisArgs; a basis over its bounds is recorded as
// audit.OverLimit. The MCP and model gateways record it with
// every request event the policy decided, so that `agentmesh policy
// replay` can make the decision again as it was made.
func Basis(r *policy.Request, eventMethod string, pol *policy.Policy) *audit.Basis {
	b := &audit.Basis{
		SrcTags: tagList(r.Src.Tags), DstTags: tagList(r.Dst.Tags), SrcUser: r.Src.User,
		Template: r.Template, HTTPMethod: r.HTTPMethod, Path: r.Path,
	}
	if r.Method != eventMethod {
		b.Method = r.Method
	}
	if paths := pol.AuditArgPaths(); len(paths) > 0 {
		args, kept, ok := policy.KeepArgs(paths, r.Args, audit.MaxBasisArgs)
		b.ArgPaths, b.Args = kept, args
		if !ok {
			b.Unjudged = audit.BasisArgsOverLimit
		}
	}
	if b.Check() != nil {
		// Tags and paths are not bounded elsewhere: never let them make
		// the event unrecordable, which would withhold the answer.
		return audit.OverLimit()
	}
	return b
}

// tagList is tags as sorted strings, never nil.
func tagList(tags []identity.Tag) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = string(t)
	}
	slices.Sort(out)
	return out
}
