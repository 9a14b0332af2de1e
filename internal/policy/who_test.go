package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

const whoDoc = `{
  "groups": {
    "group:tellers": ["agent:teller", "tag:branch"],
    "group:oncall": ["admin:alice"],
  },
  "grants": [
    {"src": ["group:tellers"], "dst": ["tool:ledger"], "tools": ["balance", "list_*", "!list_secret"]},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["*"],
     "when": "args.account != 'root'"},
    {"src": ["*"], "dst": ["tool:ledger"]},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["transfer"],
     "approval": "group:oncall", "approval_timeout": "2m"},
    {"src": ["agent:teller"], "dst": ["model:gpt"], "models": ["gpt-*"]},
  ],
}`

func whoNodes() []Node {
	return []Node{
		{Kind: identity.KindAgent, Name: "teller"},
		{Kind: identity.KindAgent, Name: "clerk", Tags: []identity.Tag{"tag:branch"}},
		{Kind: identity.KindAgent, Name: "auditor"},
		{Kind: identity.KindTool, Name: "ledger", Tags: []identity.Tag{"tag:prod"}},
		{Kind: identity.KindModel, Name: "gpt"},
	}
}

// rightLine is a right in one line, for comparing.
func rightLine(r Right) string {
	s := fmt.Sprintf("%s->%s via %s", r.Src, r.Dst, r.Via)
	if r.Member != "" {
		s += "(" + r.Member + ")"
	}
	s += fmt.Sprintf(" g%d L%d", r.Grant, r.Line)
	if r.Connect {
		s += " connect"
	}
	if r.Tools != nil {
		s += " tools=" + strings.Join(r.Tools, ",")
		if r.ToolsSeen {
			s += "(seen)"
		}
	}
	if r.Models != nil {
		s += " models=" + strings.Join(r.Models, ",")
	}
	if r.Conditional {
		s += " when[" + r.When + "]"
	}
	if r.Approval != "" {
		s += " approval=" + r.Approval + "/" + r.ApprovalTimeout
	}
	return s
}

func rightLines(rs []Right) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, rightLine(r))
	}
	return out
}

func compileOK(t *testing.T, doc string) *Policy {
	t.Helper()
	p, err := Compile([]byte(doc), "1")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWhoListsRegisteredIdentitiesWithGrantWhenAndApproval(t *testing.T) {
	p := compileOK(t, whoDoc)
	ledger := whoNodes()[3]
	got := rightLines(p.Who(ledger, WhoQuery{Nodes: whoNodes()}))
	want := []string{
		"agent:auditor->tool:ledger via agent:auditor g1 L8 tools=* when[args.account != 'root']",
		"agent:auditor->tool:ledger via * g2 L10 connect",
		"agent:clerk->tool:ledger via group:tellers(tag:branch) g0 L7 tools=balance,list_*,!list_secret",
		"agent:clerk->tool:ledger via * g2 L10 connect",
		"agent:teller->tool:ledger via group:tellers(agent:teller) g0 L7 tools=balance,list_*,!list_secret",
		"agent:teller->tool:ledger via * g2 L10 connect",
		"agent:teller->tool:ledger via agent:teller g3 L11 tools=transfer approval=group:oncall/2m0s",
		"model:gpt->tool:ledger via * g2 L10 connect",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Who:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWhoExpandsReportedToolsAndFiltersOneTool(t *testing.T) {
	p := compileOK(t, whoDoc)
	ledger := whoNodes()[3]
	seen := map[string][]string{"ledger": {"balance", "list_accounts", "list_secret", "transfer", "drop"}}
	got := rightLines(p.Who(ledger, WhoQuery{Nodes: whoNodes()[:2], Tools: seen}))
	want := []string{
		"agent:clerk->tool:ledger via group:tellers(tag:branch) g0 L7 tools=balance,list_accounts(seen)",
		"agent:clerk->tool:ledger via * g2 L10 connect",
		"agent:teller->tool:ledger via group:tellers(agent:teller) g0 L7 tools=balance,list_accounts(seen)",
		"agent:teller->tool:ledger via * g2 L10 connect",
		"agent:teller->tool:ledger via agent:teller g3 L11 tools=transfer(seen) approval=group:oncall/2m0s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Who with tools:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// One tool: only the grants whose list covers it; an excluded tool
	// has none but the conditional catch-all.
	got = rightLines(p.Who(ledger, WhoQuery{Nodes: whoNodes(), Tools: seen, Tool: "list_secret"}))
	want = []string{"agent:auditor->tool:ledger via agent:auditor g1 L8 tools=list_secret(seen) when[args.account != 'root']"}
	if !slices.Equal(got, want) {
		t.Errorf("Who --tool list_secret:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWhoWithoutRegistryNamesSelectors(t *testing.T) {
	p := compileOK(t, whoDoc)
	got := rightLines(p.Who(Node{Kind: identity.KindTool, Name: "ledger"}, WhoQuery{Tool: "balance"}))
	want := []string{
		"agent:teller->tool:ledger via group:tellers(agent:teller) g0 L7 tools=balance",
		"tag:branch->tool:ledger via group:tellers(tag:branch) g0 L7 tools=balance",
		"agent:auditor->tool:ledger via agent:auditor g1 L8 tools=balance when[args.account != 'root']",
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Who offline:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCanListsEverythingASourceMayUse(t *testing.T) {
	p := compileOK(t, whoDoc)
	teller := whoNodes()[0]
	got := rightLines(p.Can(teller, WhoQuery{Nodes: whoNodes(), Tools: map[string][]string{"ledger": {"balance", "transfer"}}}))
	want := []string{
		"agent:teller->model:gpt via model:gpt g4 L13 models=gpt-*",
		"agent:teller->tool:ledger via tool:ledger g0 L7 tools=balance(seen)",
		"agent:teller->tool:ledger via tool:ledger g2 L10 connect",
		"agent:teller->tool:ledger via tool:ledger g3 L11 tools=transfer(seen) approval=group:oncall/2m0s",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Can:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Every right Can shows is one Decide agrees with: the listed tools
	// are allowed (or decided per call, for a conditional grant).
	for _, r := range p.Can(teller, WhoQuery{Nodes: whoNodes(), Tools: map[string][]string{"ledger": {"balance", "transfer", "drop"}}}) {
		for _, tool := range r.Tools {
			d := p.Decide(Request{Src: teller, Dst: whoNodes()[3], Action: ActionTool, Method: "tools/call", Tool: tool})
			if !d.Allow {
				t.Errorf("Can shows %s via grant %d, Decide denies it: %s", tool, r.Grant, d.Explain())
			}
		}
	}
	// A source no grant names may use nothing.
	if got := p.Can(Node{Kind: identity.KindAgent, Name: "nobody"}, WhoQuery{Nodes: whoNodes()}); len(got) != 1 || !got[0].Connect {
		t.Errorf("Can(nobody) = %v, want only the connect of the * grant", rightLines(got))
	}
}
