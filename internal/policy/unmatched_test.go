package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

func TestUnmatchedNamesSelectorsAndTagsNoNodeHas(t *testing.T) {
	doc := `{
  "groups": {"group:ops": ["agent:oncall", "tag:sre"]},
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance"]},
    {"src": ["agent:tellr", "group:ops"], "dst": ["tag:prd"], "tools": ["*"]},
    {"src": ["*", "user:alice@example.com"], "dst": ["tool:ledger"]},
  ],
  "limits": [{"src": ["tag:sre"], "dst": ["model:gpt"], "rpm": 10}],
}`
	p, err := Compile([]byte(doc), "1")
	if err != nil {
		t.Fatal(err)
	}
	nodes := []Node{
		{Kind: identity.KindAgent, Name: "teller"},
		{Kind: identity.KindAgent, Name: "oncall", Tags: []identity.Tag{"tag:staff"}},
		{Kind: identity.KindTool, Name: "ledger", Tags: []identity.Tag{"tag:prod"}},
	}
	var got []string
	for _, u := range p.Unmatched(nodes) {
		got = append(got, u.Selector+" @ "+strings.Join(u.Where, "; "))
	}
	want := []string{
		"agent:tellr @ grants[1] (line 5) src",
		"model:gpt @ limits[0] dst",
		"tag:prd @ grants[1] (line 5) dst",
		"tag:sre @ grants[1] (line 5) src; limits[0] src",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Unmatched =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := p.Unmatched(nodes)[2].String(); !strings.Contains(s, "no node carries it") {
		t.Errorf("String of an unmatched tag: %q", s)
	}
	if s := p.Unmatched(nodes)[0].String(); !strings.Contains(s, "no agent of that name") {
		t.Errorf("String of an unmatched agent: %q", s)
	}
	// Every selector matched: nothing to say.
	nodes = append(nodes, Node{Kind: identity.KindAgent, Name: "tellr", Tags: []identity.Tag{"tag:sre"}},
		Node{Kind: identity.KindModel, Name: "gpt"}, Node{Kind: identity.KindTool, Name: "files", Tags: []identity.Tag{"tag:prd"}})
	if u := p.Unmatched(nodes); len(u) != 0 {
		t.Fatalf("Unmatched with every node present = %v", u)
	}
}
