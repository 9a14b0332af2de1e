package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func agent(name string, tags ...identity.Tag) Node {
	return Node{Kind: identity.KindAgent, Name: identity.Name(name), Tags: tags}
}

func tool(name string, tags ...identity.Tag) Node {
	return Node{Kind: identity.KindTool, Name: identity.Name(name), Tags: tags}
}

func model(name string, tags ...identity.Tag) Node {
	return Node{Kind: identity.KindModel, Name: identity.Name(name), Tags: tags}
}

func callTool(src, dst Node, name string, args map[string]any) Request {
	return Request{Src: src, Dst: dst, Action: ActionTool, Method: "tools/call", Tool: name, Args: args}
}

const decideDoc = `{
  "groups": {
    "group:fraud": ["agent:fraud-detector", "tag:fraud"],
    "group:analysts": ["group:fraud", "agent:analyst"],
  },
  "grants": [
    // 0
    {"src": ["group:fraud"], "dst": ["tool:payments-db"], "tools": ["query", "list_*", "!list_secrets"], "resources": ["db://public/*"],
     "when": "tool.name != 'query' || !args.sql.matches(r'(?i)\\bdelete\\b')"},
    // 1: grants add up: analysts (which includes fraud) get describe_*
    {"src": ["group:analysts"], "dst": ["tool:payments-db"], "tools": ["describe_*"], "prompts": ["summary"]},
    // 2: connection only
    {"src": ["tag:monitoring"], "dst": ["*"]},
    // 3: models by tag
    {"src": ["tag:support"], "dst": ["model:llm-internal"], "models": ["llama-3*"]},
    // 4: a when that needs an argument
    {"src": ["agent:teller"], "dst": ["tag:ledger"], "tools": ["transfer"], "when": "args.amount <= 1000"},
    // 5: everything to a sandbox
    {"src": ["*"], "dst": ["tool:sandbox"], "tools": ["*"]},
    // 6: a second grant for the same pair, with a different when
    {"src": ["agent:teller"], "dst": ["tag:ledger"], "tools": ["transfer"], "when": "src.name == 'teller' && 'tag:senior' in src.tags"},
    // 7: when sees method, dst, resource, prompt and model
    {"src": ["agent:probe"], "dst": ["tool:inspect"], "tools": ["*"], "resources": ["*"], "prompts": ["*"],
     "when": "method.startsWith('tools/') && dst.kind == 'tool' && dst.name == 'inspect' && resource.uri == '' && prompt.name == '' && model == ''"},
    // 8: agent:x selector does not match a tool called x
    {"src": ["agent:x"], "dst": ["tool:y"], "tools": ["*"]},
  ],
}`

func TestDecide(t *testing.T) {
	p := mustCompile(t, decideDoc)
	fraud := agent("fraud-detector")
	taggedFraud := agent("new-hire", "tag:fraud")
	db := tool("payments-db")
	ledger := tool("ledger", "tag:ledger")

	tests := []struct {
		name   string
		req    Request
		allow  bool
		reason reason.Code
		grant  int
		when   WhenResult
	}{
		{"default deny between unlinked nodes", callTool(agent("nobody"), db, "query", nil), false, reason.NoGrant, -1, WhenNone},
		{"connect allowed when linked", Request{Src: fraud, Dst: db, Action: ActionConnect}, true, reason.Allowed, 0, WhenNone},
		{"connect ignores when", Request{Src: agent("teller"), Dst: ledger, Action: ActionConnect}, true, reason.Allowed, 4, WhenNone},
		{"connect denied when unlinked", Request{Src: fraud, Dst: ledger, Action: ActionConnect}, false, reason.NoGrant, -1, WhenNone},
		{"tool in glob with when held", callTool(fraud, db, "query", map[string]any{"sql": "select 1"}), true, reason.Allowed, 0, WhenHeld},
		{"when false denies", callTool(fraud, db, "query", map[string]any{"sql": "DELETE FROM t"}), false, reason.WhenFalse, 0, WhenFalse},
		{"when error denies", callTool(fraud, db, "query", map[string]any{}), false, reason.WhenError, 0, WhenError},
		{"when error on wrong arg type denies", callTool(fraud, db, "query", map[string]any{"sql": json.Number("7")}), false, reason.WhenError, 0, WhenError},
		{"prefix glob", callTool(fraud, db, "list_tables", nil), true, reason.Allowed, 0, WhenHeld},
		{"bang excludes within the grant", callTool(fraud, db, "list_secrets", nil), false, reason.NotGranted, -1, WhenNone},
		{"tool outside every glob", callTool(fraud, db, "drop_table", nil), false, reason.NotGranted, -1, WhenNone},
		{"grants add up", callTool(fraud, db, "describe_table", nil), true, reason.Allowed, 1, WhenNone},
		{"tag member of group", callTool(taggedFraud, db, "list_x", nil), true, reason.Allowed, 0, WhenHeld},
		{"nested group member", callTool(agent("analyst"), db, "describe_x", nil), true, reason.Allowed, 1, WhenNone},
		{"nested group does not widen inner grant", callTool(agent("analyst"), db, "list_x", nil), false, reason.NotGranted, -1, WhenNone},
		{"prompt", Request{Src: fraud, Dst: db, Action: ActionPrompt, Prompt: "summary"}, true, reason.Allowed, 1, WhenNone},
		{"resource glob", Request{Src: fraud, Dst: db, Action: ActionResource, Resource: "db://public/t/1"}, true, reason.Allowed, 0, WhenHeld},
		{"resource outside glob", Request{Src: fraud, Dst: db, Action: ActionResource, Resource: "db://private/t"}, false, reason.NotGranted, -1, WhenNone},
		{"resource traversal is unsafe", Request{Src: fraud, Dst: db, Action: ActionResource, Resource: "db://public/../private/t"}, false, reason.UnsafeURI, -1, WhenNone},
		{"resource encoded dot is unsafe", Request{Src: fraud, Dst: db, Action: ActionResource, Resource: "db://public/%2e%2e/private"}, false, reason.UnsafeURI, -1, WhenNone},
		{"connection-only grant links", Request{Src: agent("probe", "tag:monitoring"), Dst: db, Action: ActionConnect}, true, reason.Allowed, 2, WhenNone},
		{"connection-only grant allows no tool", callTool(agent("watch", "tag:monitoring"), db, "query", nil), false, reason.NotGranted, -1, WhenNone},
		{"model by tag", Request{Src: agent("bot", "tag:support"), Dst: model("llm-internal"), Action: ActionModel, Model: "llama-3-70b"}, true, reason.Allowed, 3, WhenNone},
		{"model outside glob", Request{Src: agent("bot", "tag:support"), Dst: model("llm-internal"), Action: ActionModel, Model: "gpt-4"}, false, reason.NotGranted, -1, WhenNone},
		{"model without tag", Request{Src: agent("bot"), Dst: model("llm-internal"), Action: ActionModel, Model: "llama-3"}, false, reason.NoGrant, -1, WhenNone},
		{"dst selected by tag, json number arg", callTool(agent("teller"), ledger, "transfer", map[string]any{"amount": json.Number("500")}), true, reason.Allowed, 4, WhenHeld},
		{"float arg", callTool(agent("teller"), ledger, "transfer", map[string]any{"amount": json.Number("999.5")}), true, reason.Allowed, 4, WhenHeld},
		{"when false in one grant, held in a later one", callTool(agent("teller", "tag:senior"), ledger, "transfer", map[string]any{"amount": json.Number("5000")}), true, reason.Allowed, 6, WhenHeld},
		{"lowest failing when is reported", callTool(agent("teller"), ledger, "transfer", map[string]any{"amount": json.Number("5000")}), false, reason.WhenFalse, 4, WhenFalse},
		{"when error outranks when false", callTool(agent("teller"), ledger, "transfer", nil), false, reason.WhenError, 4, WhenError},
		{"star src", callTool(agent("anyone"), tool("sandbox"), "rm", nil), true, reason.Allowed, 5, WhenNone},
		{"star src matches models too", callTool(model("m"), tool("sandbox"), "rm", nil), true, reason.Allowed, 5, WhenNone},
		{"when sees request fields", callTool(agent("probe"), tool("inspect"), "x", nil), true, reason.Allowed, 7, WhenHeld},
		{"when sees method", Request{Src: agent("probe"), Dst: tool("inspect"), Action: ActionPrompt, Method: "prompts/get", Prompt: "p"}, false, reason.WhenFalse, 7, WhenFalse},
		{"selector kind matters for src", callTool(tool("x"), tool("y"), "a", nil), false, reason.NoGrant, -1, WhenNone},
		{"selector kind matters for dst", callTool(agent("x"), agent("y"), "a", nil), false, reason.NoGrant, -1, WhenNone},
		{"zero action", Request{Src: fraud, Dst: db}, false, reason.BadRequest, -1, WhenNone},
		{"unknown action", Request{Src: fraud, Dst: db, Action: Action(99), Tool: "query"}, false, reason.BadRequest, -1, WhenNone},
		{"empty tool name", callTool(fraud, db, "", nil), false, reason.BadRequest, -1, WhenNone},
		{"empty resource", Request{Src: fraud, Dst: db, Action: ActionResource}, false, reason.BadRequest, -1, WhenNone},
		{"empty src name", callTool(Node{Kind: identity.KindAgent}, db, "query", nil), false, reason.BadRequest, -1, WhenNone},
		{"invalid dst kind", callTool(fraud, Node{Kind: "robot", Name: "payments-db"}, "query", nil), false, reason.BadRequest, -1, WhenNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.req)
			if d.Allow != tt.allow || d.Reason != tt.reason || d.Grant != tt.grant || d.When != tt.when {
				t.Errorf("Decide = {Allow:%v Reason:%s Grant:%d When:%q}, want {Allow:%v Reason:%s Grant:%d When:%q}",
					d.Allow, d.Reason, d.Grant, d.When, tt.allow, tt.reason, tt.grant, tt.when)
			}
			if d.Version != "test" {
				t.Errorf("Version = %q, want test", d.Version)
			}
		})
	}
}

func TestDecideNilPolicyDenies(t *testing.T) {
	var p *Policy
	d := p.Decide(callTool(agent("a"), tool("b"), "x", nil))
	if d.Allow || d.Reason != reason.NoPolicy || d.Grant != -1 {
		t.Errorf("nil policy: %+v", d)
	}
	if p.Links(agent("a"), tool("b")) {
		t.Error("nil policy links")
	}
	v := p.Visible(agent("a"), tool("b"))
	if v.Tool("x") || v.Resource("x://y") || v.ResourceTemplate("x://{y}") || v.Prompt("x") || v.Model("x") {
		t.Error("nil policy shows something")
	}
}

func TestZeroDecisionAndVisibilityDeny(t *testing.T) {
	var d Decision
	if d.Allow {
		t.Error("zero Decision allows")
	}
	if !strings.Contains(d.Explain(), "denied") {
		t.Errorf("zero Decision explains as %q", d.Explain())
	}
	var v Visibility
	if v.Tool("x") || v.Resource("x://y") || v.ResourceTemplate("x://{y}") || v.Prompt("x") || v.Model("x") {
		t.Error("zero Visibility shows something")
	}
}

func TestDecideEmptyPolicyDeniesEverything(t *testing.T) {
	p := mustCompile(t, `{}`)
	for _, r := range []Request{
		{Src: agent("a"), Dst: tool("b"), Action: ActionConnect},
		callTool(agent("a"), tool("b"), "x", nil),
	} {
		if d := p.Decide(r); d.Allow || d.Reason != reason.NoGrant {
			t.Errorf("empty policy: %+v", d)
		}
	}
}

func TestLinksMatchesConnectDecision(t *testing.T) {
	p := mustCompile(t, decideDoc)
	tests := []struct {
		src, dst Node
		want     bool
	}{
		{agent("fraud-detector"), tool("payments-db"), true},
		{agent("x", "tag:monitoring"), tool("anything"), true},
		{agent("x"), tool("anything"), false},
		{agent("teller"), tool("ledger", "tag:ledger"), true},
		{agent("teller"), tool("ledger"), false},
	}
	for _, tt := range tests {
		if got := p.Links(tt.src, tt.dst); got != tt.want {
			t.Errorf("Links(%s, %s) = %v, want %v", tt.src.Name, tt.dst.Name, got, tt.want)
		}
	}
}

func TestDecideWhenCostLimitDenies(t *testing.T) {
	p := mustCompile(t, `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"],
	  "when": "args.items.all(a, args.items.all(b, args.items.all(c, a + b + c != 'zzz')))"}]}`)
	items := make([]any, 200)
	for i := range items {
		items[i] = "x"
	}
	d := p.Decide(callTool(agent("a"), tool("b"), "t", map[string]any{"items": items}))
	if d.Allow || d.Reason != reason.WhenError {
		t.Errorf("expensive when: %+v, want when_error", d)
	}
	d = p.Decide(callTool(agent("a"), tool("b"), "t", map[string]any{"items": items[:3]}))
	if !d.Allow {
		t.Errorf("cheap when: %+v, want allow", d)
	}
}

func TestDecideStringExtensionsAndMatches(t *testing.T) {
	p := mustCompile(t, `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"],
	  "when": "args.path.lowerAscii().startsWith('/srv/') && args.path.split('/').size() < 6 && !args.path.matches('\\\\.\\\\.')"}]}`)
	tests := []struct {
		path  string
		allow bool
	}{
		{"/SRV/a", true},
		{"/srv/a/b/c/d/e", false},
		{"/srv/a..b", false},
		{"/etc/passwd", false},
	}
	for _, tt := range tests {
		d := p.Decide(callTool(agent("a"), tool("b"), "read", map[string]any{"path": tt.path}))
		if d.Allow != tt.allow {
			t.Errorf("path %q: %s, want allow=%v", tt.path, d.Explain(), tt.allow)
		}
	}
}

func TestExplainNamesReasonGrantWhenAndVersion(t *testing.T) {
	d := Decision{Allow: true, Reason: reason.Allowed, Grant: 3, Version: "7", When: WhenHeld}
	want := "allowed: a grant covers the request; grant 3; when held; policy version 7"
	if got := d.Explain(); got != want {
		t.Errorf("Explain = %q, want %q", got, want)
	}
	for _, r := range Reasons {
		if strings.Contains(Decision{Reason: r, Grant: -1}.Explain(), "unknown reason") {
			t.Errorf("reason %s has no description", r)
		}
	}
}

func TestDecideIsSafeForConcurrentUse(t *testing.T) {
	p := mustCompile(t, decideDoc)
	done := make(chan bool)
	for range 4 {
		go func() {
			ok := true
			for range 200 {
				d := p.Decide(callTool(agent("fraud-detector"), tool("payments-db"), "query", map[string]any{"sql": "select"}))
				ok = ok && d.Allow
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Error("a concurrent Decide denied")
		}
	}
}

func TestDecideMatchesUserSelectorsOnlyForThatLogin(t *testing.T) {
	p := mustCompile(t, `{
	  "groups": {"group:humans": ["user:alice@example.com"]},
	  "grants": [
	    {"src": ["user:bob@example.com"], "dst": ["tool:db"], "tools": ["query"]},
	    {"src": ["group:humans"], "dst": ["tool:db"], "tools": ["describe"]},
	  ],
	}`)
	db := tool("db")
	owned := func(login string, tags ...identity.Tag) Node {
		n := agent("laptop", tags...)
		n.User = login
		return n
	}
	tests := []struct {
		name  string
		src   Node
		tool  string
		allow bool
	}{
		{"user selector matches its login", owned("bob@example.com"), "query", true},
		{"user selector in a group", owned("alice@example.com"), "describe", true},
		{"another login does not match", owned("alice@example.com"), "query", false},
		{"a login not in lower case is denied", owned("Bob@example.com"), "query", false},
		{"a node without a user matches no user selector", agent("laptop"), "query", false},
		{"tags do not stand in for the user", owned("", "tag:bob@example.com"), "query", false},
		{"a nameless node is matched by its user", Node{Kind: identity.KindAgent, User: "bob@example.com"}, "query", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(callTool(tt.src, db, tt.tool, nil))
			if d.Allow != tt.allow {
				t.Fatalf("Decide = %+v, want allow %v", d, tt.allow)
			}
		})
	}
}
