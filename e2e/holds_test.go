//go:build unix

package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// holdsPolicy calls server-everything's get-sum destructive (the server
// says nothing of the kind; the policy decides) and echo read-only: the
// assistant's destructive calls wait for group:oncall, which is alice.
const holdsPolicy = `{
  "groups": {"group:oncall": ["admin:alice"]},
  "annotations": {"tool:everything": {"readonly": ["echo"], "destructive": ["get-sum"]}},
  "grants": [
    {"src": ["agent:assistant"], "dst": ["tool:everything"], "tools": ["destructive:*"],
     "approval": "group:oncall", "approval_timeout": "2m"},
    {"src": ["agent:assistant"], "dst": ["tool:everything"], "tools": ["readonly:*"]},
  ],
}
`

// approval is the part of `agentmesh approvals list --json` the test reads.
type approval struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Tool      string `json:"tool"`
	Caller    string `json:"caller"`
	EventID   string `json:"event_id"`
	DecidedBy string `json:"decided_by"`
}

// adminEvent is an audit event with the fields of admin actions.
type adminEvent struct {
	ID       string `json:"id"`
	Src      string `json:"src"`
	Tool     string `json:"tool"`
	Action   string `json:"action"`
	Target   string `json:"target"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail"`
}

// waitPending polls `agentmesh approvals list` (as admin state) until a
// call of tool is pending, and returns it.
func (m *mesh) waitPending(state, tool string) approval {
	m.t.Helper()
	deadline := time.Now().Add(commandTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var list []approval
		if err := json.Unmarshal([]byte(m.must("approvals", "list", "--json", "--state", state)), &list); err != nil {
			m.t.Fatal(err)
		}
		for _, a := range list {
			if a.Tool == tool && a.Status == "pending" {
				return a
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("no call of %s became pending", tool)
		}
		<-tick.C
	}
}

// TestApprovalHoldsEndToEnd: a tool call the policy calls destructive is
// held at the gateway until an approver runs `agentmesh approvals
// approve`, and then completes; the trail shows who approved it. A second
// one is refused with `approvals deny`, and an admin outside the approval
// group cannot decide.
func TestApprovalHoldsEndToEnd(t *testing.T) {
	m := newMesh(t)
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	alice := m.join("admin", "alice", "tag:ops")
	mallory := m.join("admin", "mallory", "tag:ops")
	m.applyPolicy(holdsPolicy)
	m.serve("everything", tool, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")

	// The held call declares a progress token: the gateway tells the
	// client it waits for approval before the answer comes.
	call := func() <-chan clientOutput {
		done := make(chan clientOutput, 1)
		go func() {
			var o clientOutput
			defer func() { done <- o }() // also when runClient fails the test
			o = runClient(t, stdioClient("everything", agent,
				step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": "not held"}},
				step{Op: "callTool", Name: "get-sum", Arguments: map[string]any{"a": 2, "b": 40}, Progress: true}))
		}()
		return done
	}

	done := call()
	a := m.waitPending(alice, "get-sum")
	if !strings.HasSuffix(a.Caller, "/agent/assistant") || a.EventID == "" {
		t.Errorf("pending approval %+v", a)
	}
	// mallory is an admin but not in group:oncall.
	if _, errOut, code := m.run("approvals", "approve", a.ID, "--state", mallory); code == 0 || !strings.Contains(errOut, "not_approver") {
		t.Errorf("mallory approved: exit %d, %s", code, errOut)
	}
	m.must("approvals", "approve", a.ID, "--state", alice)
	res := <-done
	if len(res.Results) != 2 {
		t.Fatalf("client.mjs: %s", res.Raw)
	}
	if got := texts(t, res.Results[0]); !strings.Contains(got, "not held") {
		t.Errorf("echo returned %q", got)
	}
	if got := texts(t, res.Results[1]); !strings.Contains(got, "42") {
		t.Errorf("approved get-sum returned %q", got)
	}
	if res.Results[1].WireProgressBeforeResult < 1 {
		t.Errorf("the client was not told that its call waits for approval: %s", res.Raw)
	}

	done = call()
	b := m.waitPending(alice, "get-sum")
	m.must("approvals", "deny", b.ID, "--reason", "freeze", "--state", alice)
	res = <-done
	if len(res.Results) != 2 {
		t.Fatalf("client.mjs: %s", res.Raw)
	}
	denied := policyDenial(t, res.Results[1], "approval_denied")

	// A client that declared elicitation is asked, through the connector,
	// whether to keep waiting; its decline withdraws the hold before
	// anybody decides it.
	spec := stdioClient("everything", agent, step{Op: "callTool", Name: "get-sum", Arguments: map[string]any{"a": 1, "b": 1}})
	spec.Elicitation = "decline"
	res = runClient(t, spec)
	if len(res.Results) != 1 || len(res.Elicitations) != 1 ||
		!strings.Contains(res.Elicitations[0].Message, "get-sum waits for approval by group:oncall") {
		t.Fatalf("client.mjs: %s", res.Raw)
	}
	withdrawn := policyDenial(t, res.Results[0], "approval_withdrawn")

	// The gateway's events (the approved call's, the denied one's and the
	// withdrawn one's) reach the coordinator; the coordinator recorded the
	// decisions.
	m.waitAudit(a.EventID, denied, withdrawn)
	var approvedCall, deniedCall, approvedBy, refused bool
	for _, l := range strings.Split(strings.TrimSpace(m.must("audit", "--json", "--limit", "0", "--state", m.admin)), "\n") {
		var e adminEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit --json printed %q: %v", l, err)
		}
		switch {
		case e.ID == a.EventID:
			approvedCall = e.Decision == "allow" && e.Tool == "get-sum" && strings.Contains(e.Detail, "approved by ") &&
				strings.Contains(e.Detail, "/admin/alice") && strings.Contains(e.Detail, a.ID)
		case e.ID == denied:
			deniedCall = e.Reason == "approval_denied" && strings.Contains(e.Detail, "/admin/alice") && strings.Contains(e.Detail, "freeze")
		case e.Action == "approvals.approve" && e.Target == a.ID && strings.HasSuffix(e.Src, "/admin/alice"):
			approvedBy = e.Decision == "allow"
		case e.Action == "approvals.approve" && e.Target == a.ID && strings.HasSuffix(e.Src, "/admin/mallory"):
			refused = e.Decision == "deny" && e.Reason == "not_approver"
		}
	}
	if !approvedCall || !deniedCall || !approvedBy || !refused {
		t.Errorf("audit trail: approved call with approver %v, denied call %v, alice's approval %v, mallory's refusal %v",
			approvedCall, deniedCall, approvedBy, refused)
	}
	// The table people read names the approver and the approval.
	table := m.must("audit", "--tool", "get-sum", "--limit", "0", "--state", m.admin)
	if !strings.Contains(table, "approvals.approve "+a.ID) || !strings.Contains(table, "alice") {
		t.Errorf("agentmesh audit --tool get-sum does not show alice's approval:\n%s", table)
	}
	m.verifyAudit()
}
