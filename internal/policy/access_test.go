package policy

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestMayCallToolSaysHowEachToolIsDecided(t *testing.T) {
	p := mustCompile(t, `{
  "groups": {"group:oncall": ["admin:alice"]},
  "grants": [
    {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["read"]},
    {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["write"], "when": "args.path.startsWith('/tmp/')"},
    {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["hidden"], "when": "tool.name == 'nope'"},
    {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["push"], "approval": "group:oncall"},
  ],
}`)
	a, dst := Node{Kind: "agent", Name: "a"}, Node{Kind: "tool", Name: "t"}
	for _, c := range []struct {
		tool string
		want ToolAccess
	}{
		{"read", ToolAccess{Allow: true, Reason: reason.Allowed}},
		{"write", ToolAccess{Allow: true, Conditional: true, Reason: reason.WhenError}},
		{"hidden", ToolAccess{Reason: reason.WhenFalse}},
		{"push", ToolAccess{Allow: true, Approval: "group:oncall", Reason: reason.Allowed}},
		{"drop", ToolAccess{Reason: reason.NotGranted}},
	} {
		if got := p.MayCallTool(a, dst, c.tool); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.tool, got, c.want)
		}
	}
	var none *Policy
	if got := none.MayCallTool(a, dst, "read"); got.Allow || got.Reason != reason.NoPolicy {
		t.Errorf("nil policy: %+v", got)
	}
}
