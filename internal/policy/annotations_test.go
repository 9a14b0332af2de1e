package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const classDoc = `{
  "groups": {
    "group:oncall": ["admin:alice", "tag:oncall"],
  },
  "annotations": {
    "tool:repo": {"readonly": ["get_*", "list_*", "delete_cache"], "destructive": ["delete_*", "push"]},
  },
  "grants": [
    // 0: CI may call every read-only tool of repo
    {"src": ["tag:ci"], "dst": ["tool:repo"], "tools": ["readonly:*"]},
    // 1: devs may call everything but destructive tools
    {"src": ["agent:dev"], "dst": ["tool:repo"], "tools": ["*", "!destructive:*"]},
    // 2: operators need approval for destructive tools
    {"src": ["agent:ops"], "dst": ["tool:repo"], "tools": ["destructive:*"], "approval": "group:oncall", "approval_timeout": "90s"},
    // 3: operators call read-only tools freely
    {"src": ["agent:ops"], "dst": ["tool:repo"], "tools": ["readonly:*"]},
    // 4: another server, without annotations
    {"src": ["tag:ci"], "dst": ["tool:other"], "tools": ["readonly:*"]},
  ],
}`

func TestToolClassesDecide(t *testing.T) {
	p := mustCompile(t, classDoc)
	repo, other := tool("repo"), tool("other")
	ci, dev, ops := agent("ci-1", "tag:ci"), agent("dev"), agent("ops")
	for _, tc := range []struct {
		src   Node
		dst   Node
		tool  string
		allow bool
		grant int
	}{
		{ci, repo, "get_issue", true, 0},
		{ci, repo, "list_prs", true, 0},
		// Unclassified: not read-only, whatever the server says of it.
		{ci, repo, "comment", false, -1},
		// delete_cache matches both lists: destructive wins.
		{ci, repo, "delete_cache", false, -1},
		{ci, repo, "push", false, -1},
		{dev, repo, "comment", true, 1},
		{dev, repo, "get_issue", true, 1},
		{dev, repo, "push", false, -1},
		{dev, repo, "delete_branch", false, -1},
		{ops, repo, "push", true, 2},
		{ops, repo, "get_issue", true, 3},
		{ops, repo, "comment", false, -1},
		// A server without annotations classifies nothing.
		{ci, other, "get_issue", false, -1},
	} {
		d := p.Decide(callTool(tc.src, tc.dst, tc.tool, nil))
		if d.Allow != tc.allow || d.Allow && d.Grant != tc.grant {
			t.Errorf("%s -> %s %s: got %s (grant %d), want allow=%v grant %d", tc.src.Name, tc.dst.Name, tc.tool, d.Explain(), d.Grant, tc.allow, tc.grant)
		}
		if !d.Allow && d.Reason != reason.NotGranted {
			t.Errorf("%s %s: reason %s, want not_granted", tc.src.Name, tc.tool, d.Reason)
		}
	}
	vis := p.Visible(ci, repo)
	if !vis.Tool("get_issue") || vis.Tool("push") || vis.Tool("comment") {
		t.Errorf("visibility of classes wrong: get_issue %v push %v comment %v", vis.Tool("get_issue"), vis.Tool("push"), vis.Tool("comment"))
	}
	if got := p.ToolClass(repo, "delete_cache"); got != ClassDestructive {
		t.Errorf("ToolClass(delete_cache) = %q, want destructive", got)
	}
	if got := p.ToolClass(repo, "comment"); got != "" {
		t.Errorf("ToolClass(comment) = %q, want unclassified", got)
	}
}

func TestApprovalDecision(t *testing.T) {
	p := mustCompile(t, classDoc)
	d := p.Decide(callTool(agent("ops"), tool("repo"), "push", nil))
	if !d.Allow || d.Approval != "group:oncall" || d.ApprovalTimeout != 90*time.Second {
		t.Fatalf("push by ops: %+v, want allow held for group:oncall for 90s", d)
	}
	if !strings.Contains(d.Explain(), "held for approval by group:oncall (up to 1m30s)") {
		t.Errorf("Explain() = %q", d.Explain())
	}
	if d := p.Decide(callTool(agent("ops"), tool("repo"), "get_issue", nil)); d.Approval != "" {
		t.Errorf("get_issue by ops needs approval %q, want none", d.Approval)
	}
	if g, to := p.GrantApproval(2); g != "group:oncall" || to != 90*time.Second {
		t.Errorf("GrantApproval(2) = %q %v", g, to)
	}
	admin := func(name string, tags ...identity.Tag) Node {
		return Node{Kind: identity.KindAdmin, Name: identity.Name(name), Tags: tags}
	}
	for _, tc := range []struct {
		n    Node
		want bool
	}{
		{admin("alice"), true},
		{admin("bob", "tag:oncall"), true},
		{admin("mallory"), false},
		{agent("alice"), false}, // not an admin node
		{Node{Kind: identity.KindAgent, Name: "x", Tags: []identity.Tag{"tag:oncall"}}, false},
	} {
		if got := p.Approves("group:oncall", tc.n); got != tc.want {
			t.Errorf("Approves(%s %s %v) = %v, want %v", tc.n.Kind, tc.n.Name, tc.n.Tags, got, tc.want)
		}
	}
	if p.Approves("group:other", admin("alice")) {
		t.Error("a group no grant names as approval approves")
	}

	// The projection for repo carries the approval, its group and the
	// annotations, and decides the same.
	pr, err := p.Project(tool("repo"))
	if err != nil {
		t.Fatal(err)
	}
	pp, err := CompileProjection(pr, "test")
	if err != nil {
		t.Fatalf("CompileProjection: %v\n%s", err, pr.Document)
	}
	d2 := pp.Decide(callTool(agent("ops"), tool("repo"), "push", nil))
	if d2.Approval != d.Approval || d2.ApprovalTimeout != d.ApprovalTimeout || d2.Grant != 2 {
		t.Errorf("projection decides %+v, whole document %+v", d2, d)
	}
	if d := pp.Decide(callTool(agent("ci-1", "tag:ci"), tool("repo"), "push", nil)); d.Allow {
		t.Error("projection lost the destructive class")
	}
	if !pp.Decide(callTool(agent("ci-1", "tag:ci"), tool("repo"), "get_issue", nil)).Allow {
		t.Error("projection lost the read-only class")
	}
}

func TestAnnotationsAndApprovalValidation(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		line      int
		msg       string
	}{
		{"unknown class", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"]}],
"annotations": {"tool:repo": {
  "readOnly": ["get_*"]}}}`, 4, `unknown tool class "readOnly"`},
		{"server no grant names", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"]}],
"annotations": {
  "tool:rep": {"readonly": ["get_*"]}}}`, 4, "no grant's dst names"},
		{"not a tool server", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"]}],
"annotations": {
  "agent:x": {"readonly": ["get_*"]}}}`, 4, "want tool:NAME"},
		{"exclusion in a class", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"]}],
"annotations": {"tool:repo": {"readonly": ["*",
  "!push"]}}}`, 4, "not allowed here"},
		{"approval group undefined", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"],
  "approval": "group:oncall"}]}`, 3, "want group:NAME of a group defined"},
		{"approval group matches nobody", `{
"groups": {"group:oncall": ["agent:a", "tool:b"]},
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"],
  "approval": "group:oncall"}]}`, 4, "matches nobody who can approve"},
		{"empty approval group", `{
"groups": {"group:oncall": []},
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"],
  "approval": "group:oncall"}]}`, 4, "matches nobody who can approve"},
		{"bad timeout", `{
"groups": {"group:oncall": ["admin:alice"]},
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"], "approval": "group:oncall",
  "approval_timeout": "forever"}]}`, 4, "approval_timeout"},
		{"timeout without approval", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"],
  "approval_timeout": "1m"}]}`, 3, "without"},
		{"approval on resources", `{
"groups": {"group:oncall": ["admin:alice"]},
"grants": [{"src": ["*"], "dst": ["tool:repo"], "tools": ["*"],
  "resources": ["*"], "approval": "group:oncall"}]}`, 4, "only tools"},
		{"admin outside a group", `{
"grants": [{"src": ["admin:alice"], "dst": ["tool:repo"], "tools": ["*"]}]}`, 2, "may only be a member of a group"},
		{"class list of only exclusions", `{
"grants": [{"src": ["*"], "dst": ["tool:repo"],
  "tools": ["!destructive:*"]}]}`, 3, "matches nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile([]byte(tc.doc), "t")
			if err == nil {
				t.Fatal("compiled")
			}
			var pe *Error
			if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v: not a positioned invalid-policy error", err)
			}
			if pe.Line != tc.line || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("error %v: want line %d and %q", err, tc.line, tc.msg)
			}
		})
	}
}

func TestUnmatchedApprovers(t *testing.T) {
	p := mustCompile(t, classDoc)
	nodes := []Node{tool("repo"), tool("other"), agent("dev"), agent("ops"), agent("ci-1", "tag:ci")}
	var got []string
	for _, u := range p.Unmatched(nodes) {
		if strings.Contains(strings.Join(u.Where, ","), "approval group:oncall") {
			got = append(got, u.Selector)
		}
	}
	if strings.Join(got, ",") != "admin:alice,tag:oncall" {
		t.Errorf("unmatched approvers %v, want admin:alice and tag:oncall", got)
	}
	nodes = append(nodes, Node{Kind: identity.KindAdmin, Name: "alice"})
	for _, u := range p.Unmatched(nodes) {
		if u.Selector == "admin:alice" {
			t.Errorf("admin:alice reported unmatched although registered: %v", u)
		}
	}
}
