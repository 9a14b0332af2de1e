package console

import (
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestRuleTextShowsTheGrantAsWrittenWithItsComment(t *testing.T) {
	doc := `{
  "grants": [
    {"src": ["agent:a"], "dst": ["tool:x"], "tools": ["*"]},
    // 1. Auditors read.
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance"]},
  ],
  "limits": [{"src": ["*"], "dst": ["model:m"], "requests_per_minute": 5}],
}`
	for _, c := range []struct{ rule, ref, want string }{
		{"1", "grants[1]", "// 1. Auditors read.\n{\"src\": [\"agent:auditor\"], \"dst\": [\"tool:ledger\"], \"tools\": [\"balance\"]}"},
		{"limits[0]", "limits[0]", `{"src": ["*"], "dst": ["model:m"], "requests_per_minute": 5}`},
		{"7", "grants[7]", ""},
		{"", "", ""},
		{"limits[x]", "", ""},
		{"-1", "", ""},
	} {
		ref := ruleRef(c.rule)
		if ref != c.ref {
			t.Errorf("ruleRef(%q) = %q, want %q", c.rule, ref, c.ref)
			continue
		}
		if ref == "" {
			continue
		}
		if got := strings.TrimSpace(ruleText(doc, ref)); got != c.want {
			t.Errorf("ruleText(%s) = %q, want %q", ref, got, c.want)
		}
	}
}

func TestExplainSaysWhyInWords(t *testing.T) {
	deny := explain(audit.Event{Decision: audit.Deny, Reason: "no_grant", PolicyVersion: "3"})
	if !strings.Contains(deny, "no grant links the source to the destination") || !strings.Contains(deny, "policy version 3") {
		t.Errorf("explain(no_grant) = %q", deny)
	}
	allow := explain(audit.Event{Decision: audit.Allow, Reason: "allowed", Rule: "2", PolicyVersion: "3"})
	if !strings.Contains(allow, "grant 2") {
		t.Errorf("explain(allowed by grant 2) = %q", allow)
	}
	if got := explain(audit.Event{Decision: audit.Deny, Reason: "unknown_peer"}); !strings.HasPrefix(got, "unknown_peer: decided before or outside the policy") {
		t.Errorf("explain(unknown_peer) = %q", got)
	}
}

func TestGroupCountsDenialsBySourceAndReasonMostFirst(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ev := func(src, r string, seq int64, count int64) audit.Event {
		return audit.Event{Seq: seq, Src: src, Reason: reason.Code(r), Time: t0.Add(time.Duration(seq) * time.Second), Count: count, Method: "tools/call", Tool: "t"}
	}
	got := group([]audit.Event{
		ev("spiffe://td/agent/a", "not_granted", 1, 0),
		ev("spiffe://td/agent/b", "no_grant", 2, 5), // an aggregate of 5 attempts
		ev("spiffe://td/agent/a", "not_granted", 3, 0),
		ev("spiffe://td/agent/a", "when_false", 4, 0),
	})
	want := []count{
		{Key: "agent:b", Key2: "no_grant", N: 5, Seq: 2},
		{Key: "agent:a", Key2: "not_granted", N: 2, Seq: 3},
		{Key: "agent:a", Key2: "when_false", N: 1, Seq: 4},
	}
	if len(got) != len(want) {
		t.Fatalf("group = %+v", got)
	}
	for i := range want {
		if got[i].Key != want[i].Key || got[i].Key2 != want[i].Key2 || got[i].N != want[i].N || got[i].Seq != want[i].Seq {
			t.Errorf("group[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestOverviewFlagsNodesWhoseCertificateLapses(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	node := func(name, status string, expires time.Time) nodeView {
		return nodeView{NodeInfo: controlapi.NodeInfo{Name: name, Kind: "agent", Status: status, CertExpires: expires}}
	}
	nodes := []nodeView{
		node("renewed", "active", now.Add(40*time.Minute)),
		node("late", "active", now.Add(10*time.Minute)),
		node("lapsed", "active", now.Add(-time.Minute)),
		node("unknown", "active", time.Time{}),
		node("gone", "revoked", now.Add(-time.Hour)),
	}
	var names []string
	for _, n := range lapsing(nodes, time.Hour, now) {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, " "); got != "late lapsed" {
		t.Fatalf("lapsing nodes: %q, want \"late lapsed\"", got)
	}
}
