package examples_test

import (
	"encoding/json"
	"testing"

	"github.com/tailscale/hujson"
	"tailscale.com/tailcfg"

	"github.com/agentmesh/agentmesh/examples"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/tailnet"
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
		reason reason.Code
	}{
		{"fraud queries payments", policy.Request{Src: fraud, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "select 1"}}, true, reason.Allowed},
		{"fraud may not delete", policy.Request{Src: fraud, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "DELETE FROM payments"}}, false, reason.WhenFalse},
		{"fraud may not drop", policy.Request{Src: fraud, Dst: db, Action: policy.ActionTool, Tool: "drop_table"}, false, reason.NotGranted},
		{"support cannot reach payments", policy.Request{Src: support, Dst: db, Action: policy.ActionConnect}, false, reason.NoGrant},
		{"support reads shared file", policy.Request{Src: support, Dst: files, Action: policy.ActionTool, Tool: "read_file", Args: map[string]any{"path": "/srv/shared/a.txt"}}, true, reason.Allowed},
		{"support path traversal", policy.Request{Src: support, Dst: files, Action: policy.ActionTool, Tool: "read_file", Args: map[string]any{"path": "/srv/shared/../x"}}, false, reason.WhenFalse},
		{"support call without path", policy.Request{Src: support, Dst: files, Action: policy.ActionTool, Tool: "read_file"}, false, reason.WhenError},
		{"unsafe resource uri", policy.Request{Src: support, Dst: files, Action: policy.ActionResource, Resource: "file:///srv/shared/%2e%2e/etc/passwd"}, false, reason.UnsafeURI},
		{"llama allowed", policy.Request{Src: support, Dst: llm, Action: policy.ActionModel, Model: "llama-3-8b"}, true, reason.Allowed},
		{"other model denied", policy.Request{Src: fraud, Dst: llm, Action: policy.ActionModel, Model: "mistral-7b"}, false, reason.NotGranted},
		{"teller transfers", policy.Request{Src: teller, Dst: ledger, Action: policy.ActionTool, Tool: "transfer"}, true, reason.Allowed},
		{"auditor cannot transfer", policy.Request{Src: auditor, Dst: ledger, Action: policy.ActionTool, Tool: "transfer"}, false, reason.NotGranted},
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

// TestTailnetMeshPolicyMatchesTailnetCallers compiles
// examples/tailnet-mesh-policy.hujson and decides for callers as the tailnet
// Identifier builds them.
func TestTailnetMeshPolicyMatchesTailnetCallers(t *testing.T) {
	p, err := policy.Compile(examples.TailnetMeshPolicy, "example")
	if err != nil {
		t.Fatalf("Compile(examples/tailnet-mesh-policy.hujson): %v", err)
	}
	db := node(identity.KindTool, "payments-db")
	tagged := node(identity.KindAgent, "fraud-detector", "tag:fraud")
	alice := policy.Node{Kind: identity.KindAgent, User: "alice@example.com"}
	bob := policy.Node{Kind: identity.KindAgent, User: "bob@example.com"}
	for _, tt := range []struct {
		name  string
		req   policy.Request
		allow bool
	}{
		{"tagged agent queries", policy.Request{Src: tagged, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "select 1"}}, true},
		{"tagged agent may not delete", policy.Request{Src: tagged, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "delete from t"}}, false},
		{"alice lists", policy.Request{Src: alice, Dst: db, Action: policy.ActionTool, Tool: "list_tables"}, true},
		{"alice may not query", policy.Request{Src: alice, Dst: db, Action: policy.ActionTool, Tool: "query", Args: map[string]any{"sql": "select 1"}}, false},
		{"bob has no grant", policy.Request{Src: bob, Dst: db, Action: policy.ActionConnect}, false},
	} {
		if d := p.Decide(tt.req); d.Allow != tt.allow {
			t.Errorf("%s: allow = %v (%s), want %v", tt.name, d.Allow, d.Reason, tt.allow)
		}
	}
}

// TestTailnetPolicyCapabilitiesCompile reads the agentmesh.dev/cap/mcp
// values of examples/tailnet-policy.hujson as control sends them (standard
// JSON) and compiles each grant's values as a gateway would.
func TestTailnetPolicyCapabilitiesCompile(t *testing.T) {
	v, err := hujson.Parse(examples.TailnetPolicy)
	if err != nil {
		t.Fatal(err)
	}
	v.Standardize()
	var doc struct {
		Grants []struct {
			Src []string                                     `json:"src"`
			App map[tailcfg.PeerCapability][]json.RawMessage `json:"app"`
		} `json:"grants"`
	}
	if err := json.Unmarshal(v.Pack(), &doc); err != nil {
		t.Fatal(err)
	}
	self := node(identity.KindTool, "payments-db")
	caller := node(identity.KindAgent, "fraud-detector", "tag:fraud")
	compiled := 0
	for i, g := range doc.Grants {
		values := g.App[tailnet.CapabilityMCP]
		if len(values) == 0 {
			t.Fatalf("grant %d carries no %s values", i, tailnet.CapabilityMCP)
		}
		raw := make([]tailcfg.RawMessage, len(values))
		for j, val := range values {
			raw[j] = tailcfg.RawMessage(val)
		}
		pol, err := tailnet.CompileCapabilities(raw, "example")
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
		compiled++
		if i == 0 {
			for _, tt := range []struct {
				tool  string
				sql   string
				allow bool
			}{{"query", "select 1", true}, {"query", "DELETE FROM t", false}, {"drop_table", "", false}, {"list_tables", "", true}} {
				req := policy.Request{Src: caller, Dst: self, Action: policy.ActionTool, Method: "tools/call", Tool: tt.tool, Args: map[string]any{"sql": tt.sql}}
				if d := pol.Decide(req); d.Allow != tt.allow {
					t.Errorf("grant 0, %s %q: allow = %v (%s), want %v", tt.tool, tt.sql, d.Allow, d.Reason, tt.allow)
				}
			}
		}
	}
	if compiled != 2 {
		t.Fatalf("compiled %d grants, want 2", compiled)
	}
}

// TestQuickstartPolicyLetsTheReaderReadAndNothingElse compiles the README
// quickstart's policy (running its tests block) and checks the decisions
// the quickstart shows: the read tools allowed, write_file not granted.
func TestQuickstartPolicyLetsTheReaderReadAndNothingElse(t *testing.T) {
	p, err := policy.Compile(examples.QuickstartPolicy, "quickstart")
	if err != nil {
		t.Fatalf("Compile(examples/quickstart-policy.hujson): %v", err)
	}
	reader := node(identity.KindAgent, "reader", "tag:readers")
	files := node(identity.KindTool, "files", "tag:files")
	for _, tt := range []struct {
		tool, path string
		want       reason.Code
	}{
		{"read_text_file", "/home/me/agentmesh-quickstart/shared/hello.txt", reason.Allowed},
		{"list_directory", "/home/me/agentmesh-quickstart/shared", reason.Allowed},
		{"write_file", "/home/me/agentmesh-quickstart/shared/new.txt", reason.NotGranted},
		{"read_text_file", "/home/me/agentmesh-quickstart/shared/../reader/node.key", reason.WhenFalse},
	} {
		d := p.Decide(policy.Request{Src: reader, Dst: files, Action: policy.ActionTool, Tool: tt.tool, Args: map[string]any{"path": tt.path}})
		if d.Reason != tt.want {
			t.Errorf("%s %s: %s, want %s", tt.tool, tt.path, d.Reason, tt.want)
		}
	}
}
