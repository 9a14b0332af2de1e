package policy

import (
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

func TestVisibilityListsTheToolPatternsOfLinkingGrantsOnly(t *testing.T) {
	p, err := Compile([]byte(`{"grants": [
		{"src": ["agent:a"], "dst": ["tool:db"], "tools": ["query", "list_*", "!drop_*"]},
		{"src": ["agent:a"], "dst": ["tool:db"], "tools": ["query", "stats"]},
		{"src": ["agent:b"], "dst": ["tool:db"], "tools": ["secret"]},
		{"src": ["agent:a"], "dst": ["tool:other"], "tools": ["other"]},
	]}`), "1")
	if err != nil {
		t.Fatal(err)
	}
	v := p.Visible(Node{Kind: identity.KindAgent, Name: "a"}, Node{Kind: identity.KindTool, Name: "db"})
	if got, want := v.ToolPatterns(), []string{"!drop_*", "list_*", "query", "stats"}; !slices.Equal(got, want) {
		t.Errorf("ToolPatterns = %q, want %q", got, want)
	}
	if got, want := v.LiteralTools(), []string{"query", "stats"}; !slices.Equal(got, want) {
		t.Errorf("LiteralTools = %q, want %q", got, want)
	}
	if got := (Visibility{}).ToolPatterns(); got != nil {
		t.Errorf("zero Visibility: ToolPatterns = %q, want none", got)
	}
}
