package policy

import "testing"

func TestVisibleFiltersLists(t *testing.T) {
	p := mustCompile(t, `{"grants": [
  {"src": ["agent:a"], "dst": ["tool:db"], "tools": ["query", "list_*", "!list_secrets"],
   "resources": ["db://public/*", "!db://public/internal/*"], "prompts": ["summary"]},
  {"src": ["agent:a"], "dst": ["tool:db"], "tools": ["admin_*"], "when": "src.name == 'root'"},
  {"src": ["agent:a"], "dst": ["tool:db"], "tools": ["transfer"], "when": "args.amount < 10"},
  {"src": ["agent:a"], "dst": ["tool:db"], "tools": ["audit"], "when": "method == 'tools/call' && tool.name == 'audit'"},
  {"src": ["agent:a"], "dst": ["model:llm"], "models": ["llama-3*"]},
  {"src": ["agent:a"], "dst": ["tool:files"], "resources": ["file:///srv/shared/*"]},
  {"src": ["agent:b"], "dst": ["tool:db"]},
]}`)
	v := p.Visible(agent("a"), tool("db"))
	files := p.Visible(agent("a"), tool("files"))
	llm := p.Visible(agent("a"), model("llm"))
	connOnly := p.Visible(agent("b"), tool("db"))
	unlinked := p.Visible(agent("c"), tool("db"))

	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"granted tool", v.Tool("query"), true},
		{"glob tool", v.Tool("list_tables"), true},
		{"excluded tool", v.Tool("list_secrets"), false},
		{"ungranted tool", v.Tool("drop_table"), false},
		{"when false hides", v.Tool("admin_reset"), false},
		{"when needing args shows", v.Tool("transfer"), true},
		{"when held shows", v.Tool("audit"), true},
		{"empty name", v.Tool(""), false},
		{"resource", v.Resource("db://public/t"), true},
		{"excluded resource", v.Resource("db://public/internal/t"), false},
		{"unsafe resource", v.Resource("db://public/../private"), false},
		{"prompt", v.Prompt("summary"), true},
		{"other prompt", v.Prompt("secret"), false},
		{"model", llm.Model("llama-3.1"), true},
		{"other model", llm.Model("gpt-4o"), false},
		{"model list at a tool", v.Model("llama-3"), false},
		{"template under granted prefix", files.ResourceTemplate("file:///srv/shared/{path}"), true},
		{"template with broader prefix", files.ResourceTemplate("file:///{path}"), true},
		{"template elsewhere", files.ResourceTemplate("file:///etc/{name}"), false},
		{"template without variables", files.ResourceTemplate("file:///srv/shared/a.txt"), true},
		{"template without variables elsewhere", files.ResourceTemplate("file:///etc/passwd"), false},
		{"template fully excluded", v.ResourceTemplate("db://public/internal/{t}"), false},
		{"template partly excluded", v.ResourceTemplate("db://public/{t}"), true},
		{"template with traversal", files.ResourceTemplate("file:///srv/shared/../{x}"), false},
		{"connection-only shows no tool", connOnly.Tool("query"), false},
		{"unlinked shows nothing", unlinked.Tool("query"), false},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: visible = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
