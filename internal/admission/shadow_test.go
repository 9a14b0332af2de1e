package admission_test

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

func TestShadowOfRecordsOnlyDifferencesAndErrors(t *testing.T) {
	shadow, err := policy.Compile([]byte(`{"grants":[{"src":["agent:a"],"dst":["tool:t"],"tools":["read"]}]}`), "shadow-5")
	if err != nil {
		t.Fatal(err)
	}
	req := func(tool string) policy.Request {
		return policy.Request{Src: policy.Node{Kind: identity.KindAgent, Name: "a"}, Dst: policy.Node{Kind: identity.KindTool, Name: "t"},
			Method: "tools/call", Action: policy.ActionTool, Tool: tool}
	}
	ask := func(tool string) func(*policy.Policy) policy.Decision {
		return func(p *policy.Policy) policy.Decision { return p.Decide(req(tool)) }
	}
	allow, deny := policy.Decision{Allow: true, Grant: 0}, policy.Decision{Grant: -1}
	st := &admission.State{Shadow: shadow}

	if got := st.ShadowOf(allow, ask("read")); got != nil {
		t.Errorf("both allow: %+v, want nil", got)
	}
	if got := st.ShadowOf(deny, ask("write")); got != nil {
		t.Errorf("both deny: %+v, want nil", got)
	}
	if got := st.ShadowOf(allow, ask("write")); got == nil || got.Decision != audit.Deny || got.PolicyVersion != "shadow-5" || got.Reason == "" {
		t.Errorf("active allows, shadow denies: %+v", got)
	}
	if got := st.ShadowOf(deny, ask("read")); got == nil || got.Decision != audit.Allow || got.Rule != "0" {
		t.Errorf("active denies, shadow allows: %+v", got)
	}
	panicky := func(*policy.Policy) policy.Decision { panic("boom") }
	if got := st.ShadowOf(allow, panicky); got == nil || got.Decision != audit.ShadowError || got.PolicyVersion != "shadow-5" {
		t.Errorf("a panicking shadow: %+v, want error", got)
	}
	failed := &admission.State{ShadowFailed: "shadow-6"}
	if got := failed.ShadowOf(allow, panicky); got == nil || got.Decision != audit.ShadowError || got.PolicyVersion != "shadow-6" {
		t.Errorf("a shadow that did not compile: %+v, want error", got)
	}
	if got := (&admission.State{}).ShadowOf(allow, panicky); got != nil {
		t.Errorf("no shadow: %+v, want nil (and not asked)", got)
	}
	// A caller's own policy is not shadowed.
	if cs := st.For(&admission.Caller{Policy: shadow}); cs.Shadow != nil || cs.ShadowFailed != "" {
		t.Errorf("For a caller with its own policy keeps the shadow")
	}
}
