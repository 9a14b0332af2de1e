package replay

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const oboActive = `{"grants": [
  {"src": ["agent:assistant"], "dst": ["tool:ledger"], "tools": ["read_*"], "on_behalf_of": ["user:alice@example.com"]},
  {"src": ["user:alice@example.com"], "dst": ["tool:ledger"], "tools": ["read_*"]},
]}`

// oboWithoutAlice keeps the agent's grant but takes Alice's own away: her
// agent now exceeds her rights.
const oboWithoutAlice = `{"grants": [
  {"src": ["agent:assistant"], "dst": ["tool:ledger"], "tools": ["read_*"], "on_behalf_of": ["user:alice@example.com"]},
]}`

// delegatedEvent is a request event as a gateway records it for
// agent:assistant acting for user through a chain of parties.
func delegatedEvent(t *testing.T, n int, pol *policy.Policy, user string, chain []string, tool string) audit.Event {
	t.Helper()
	r := policy.Request{
		Src:    policy.Node{Kind: identity.KindAgent, Name: "assistant"},
		Dst:    policy.Node{Kind: identity.KindTool, Name: "ledger"},
		Action: policy.ActionTool, Method: "tools/call", Tool: tool,
		Delegation: &policy.Delegation{User: user, Chain: chain, Depth: len(chain) - 1},
	}
	d := pol.Decide(r)
	ev := audit.Event{
		V: audit.SchemaVersion, ID: fmt.Sprintf("%032x", n), Time: t0, Kind: audit.KindRequest,
		Src: td + "agent/assistant", Dst: td + "tool/ledger", Method: "tools/call", Tool: tool,
		Decision: audit.Deny, Reason: d.Reason, PolicyVersion: pol.Version(), Basis: admission.Basis(&r, "tools/call", pol),
		OnBehalfOf: &audit.OnBehalfOf{User: user, Chain: chain, Delegation: strings.Repeat("a", 32)},
	}
	if d.Allow {
		ev.Decision = audit.Allow
	}
	if d.Grant >= 0 {
		ev.Rule = fmt.Sprint(d.Grant)
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestReplayDecidesDelegatedRequestsWithTheirPerson(t *testing.T) {
	active := compile(t, oboActive, "3")
	alice := []string{"user:alice@example.com", td + "agent/assistant"}
	bob := []string{"user:bob@example.com", td + "agent/assistant"}
	sub := []string{"user:alice@example.com", td + "agent/planner", td + "agent/assistant"}
	evs := []audit.Event{
		delegatedEvent(t, 1, active, "alice@example.com", alice, "read_books"),
		delegatedEvent(t, 2, active, "bob@example.com", bob, "read_books"),
		delegatedEvent(t, 3, active, "alice@example.com", sub, "read_books"),
	}
	if evs[0].Decision != audit.Allow || evs[1].Decision != audit.Deny {
		t.Fatalf("the active policy: %+v / %+v", evs[0], evs[1])
	}
	e := New(Options{Candidate: active, Active: active, ActiveVersion: "3"})
	for i := range evs {
		e.Add(&evs[i])
	}
	rep := e.Report()
	if rep.DisagreementCount != 0 || rep.Changed != 0 || rep.Judged != 2 || rep.NotJudgedTotal() != 1 || !strings.Contains(rep.NotJudged[0].Why, "sub-agent") {
		t.Fatalf("replay of the active policy: %s; not judged %+v; disagreements %+v", rep.Summary(), rep.NotJudged, rep.Disagreements)
	}

	e = New(Options{Candidate: compile(t, oboWithoutAlice, "4"), Active: active, ActiveVersion: "3"})
	for i := range evs {
		e.Add(&evs[i])
	}
	rep = e.Report()
	if rep.Changed != 1 || len(rep.Changes) != 1 || rep.Changes[0].To != "deny ("+string(reason.DelegationExceedsGrantor)+")" {
		t.Fatalf("without Alice's own grant: %s; changes %+v", rep.Summary(), rep.Changes)
	}
}

func TestSuggestLeavesDelegatedRequestsOut(t *testing.T) {
	active := compile(t, oboActive, "3")
	ev := delegatedEvent(t, 1, active, "alice@example.com", []string{"user:alice@example.com", td + "agent/assistant"}, "read_books")
	s := NewSuggester(SuggestOptions{Active: active})
	s.Add(&ev)
	if n := s.notUsed["made with a delegation (suggest writes no on_behalf_of)"]; n != 1 {
		t.Fatalf("not used: %+v", s.notUsed)
	}
}
