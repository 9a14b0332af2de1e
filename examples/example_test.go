package examples_test

import (
	"testing"

	"agentmesh/examples"
	"agentmesh/internal/identity"
	"agentmesh/internal/policy"
)

func node(kind identity.Kind, name string, tags ...identity.Tag) policy.Node {
	return policy.Node{Kind: kind, Name: identity.Name(name), Tags: tags}
}

// TestExamplePolicyCompilesAndDecides compiles examples/policy.hujson (which
// runs its own tests block) and checks a few decisions from the outside.
func TestExamplePolicyCompilesAndDecides(t *testing.T) {
	p, err := policy.Compile(examples.Policy, "example")
	if err != nil {
		t.Fatalf("Compile(examples/policy.hujson): %v", err)
	}
	fraud := node(identity.KindAgent, "fraud-detector")
	support := node(identity.KindAgent, "support-bot")
	teller := node(identity.KindAgent, "teller")
	auditor := node(identity.KindAgent, "auditor")
	db := node(identity.KindTool, "payments-db")
	files := node(identity.KindTool, "files")
	ledger := node(identity.KindTool, "ledger")
	llm := node(identity.KindModel, "llm-internal")

	tests := []struct {
		name   string
		req    policy.Request
		allow  bool
		reason policy.Reason
	}{
		{"fraud queries payments", policy.Request{Src: fraud, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "select 1"}}, true, policy.ReasonAllowed},
		{"fraud may not delete", policy.Request{Src: fraud, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "DELETE FROM payments"}}, false, policy.ReasonWhenFalse},
		{"fraud may not drop", policy.Request{Src: fraud, Dst: db, Action: policy.ActionTool, Tool: "drop_table"}, false, policy.ReasonNotGranted},
		{"support cannot reach payments", policy.Request{Src: support, Dst: db, Action: policy.ActionConnect}, false, policy.ReasonNoGrant},
		{"support reads shared file", policy.Request{Src: support, Dst: files, Action: policy.ActionTool, Tool: "read_file", Args: map[string]any{"path": "/srv/shared/a.txt"}}, true, policy.ReasonAllowed},
		{"support path traversal", policy.Request{Src: support, Dst: files, Action: policy.ActionTool, Tool: "read_file", Args: map[string]any{"path": "/srv/shared/../x"}}, false, policy.ReasonWhenFalse},
		{"support call without path", policy.Request{Src: support, Dst: files, Action: policy.ActionTool, Tool: "read_file"}, false, policy.ReasonWhenError},
		{"unsafe resource uri", policy.Request{Src: support, Dst: files, Action: policy.ActionResource, Resource: "file:///srv/shared/%2e%2e/etc/passwd"}, false, policy.ReasonUnsafeURI},
		{"llama allowed", policy.Request{Src: support, Dst: llm, Action: policy.ActionModel, Model: "llama-3-8b"}, true, policy.ReasonAllowed},
		{"other model denied", policy.Request{Src: fraud, Dst: llm, Action: policy.ActionModel, Model: "mistral-7b"}, false, policy.ReasonNotGranted},
		{"teller transfers", policy.Request{Src: teller, Dst: ledger, Action: policy.ActionTool, Tool: "transfer"}, true, policy.ReasonAllowed},
		{"auditor cannot transfer", policy.Request{Src: auditor, Dst: ledger, Action: policy.ActionTool, Tool: "transfer"}, false, policy.ReasonNotGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.req)
			if d.Allow != tt.allow || d.Reason != tt.reason {
				t.Errorf("Decide = %s, want allow=%v reason=%s", d.Explain(), tt.allow, tt.reason)
			}
		})
	}

	vis := p.Visible(auditor, ledger)
	if !vis.Tool("balance") || vis.Tool("transfer") {
		t.Errorf("auditor's tools/list: balance visible %v (want true), transfer visible %v (want false)", vis.Tool("balance"), vis.Tool("transfer"))
	}
}
