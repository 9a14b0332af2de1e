//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
)

// holdsPolicy calls server-everything's get-sum destructive (the server
// says nothing of the kind; the policy decides) and echo read-only: the
// assistant's destructive calls wait for group:oncall, which is alice.
const holdsPolicy = `{
  "groups": {"group:oncall": ["admin:alice"]},
  "annotations": {
    "tool:everything": {"readonly": ["echo"], "destructive": ["get-sum"]},
    "tool:ledger": {"destructive": ["drop_table"]},
  },
  "grants": [
    {"src": ["agent:assistant"], "dst": ["tool:ledger"], "tools": ["destructive:*"],
     "approval": "group:oncall", "approval_timeout": "2m"},
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
	Outcome  string `json:"outcome"`
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
	ledger := m.join("tool", "ledger", "tag:demo")
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

	// A 2026-07-28 client (the Go SDK's, through the connector's local
	// endpoint) that declares elicitation is answered input_required at
	// once; its SDK asks, calls again with the answer, and that call waits
	// for the approver and completes. Stateless requests need an HTTP
	// upstream that speaks 2026-07-28: the Go SDK's server, on loopback.
	up := gatewaytest.NewUpstream(t)
	m.serveURL("ledger", ledger, up.URL)
	stateless := m.statelessHeldCall(agent, alice)
	if n := up.Calls.Count("tool:drop_table"); n != 1 {
		t.Errorf("the ledger's MCP server ran drop_table %d times, want once", n)
	}
	for _, b := range up.Bodies() {
		if strings.Contains(string(b), "requestState") {
			t.Errorf("the MCP server got the gateway's retry params: %s", b)
		}
	}

	// The gateway's events (the approved call's, the denied one's and the
	// withdrawn one's) reach the coordinator; the coordinator recorded the
	// decisions.
	m.waitAudit(a.EventID, denied, withdrawn, stateless)
	var approvedCall, deniedCall, approvedBy, refused, statelessHeld bool
	for _, l := range strings.Split(strings.TrimSpace(m.must("audit", "--json", "--limit", "0", "--state", m.admin)), "\n") {
		var e adminEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit --json printed %q: %v", l, err)
		}
		switch {
		case e.ID == a.EventID:
			approvedCall = e.Decision == "allow" && e.Tool == "get-sum" && strings.Contains(e.Detail, "approved by ") &&
				strings.Contains(e.Detail, "/admin/alice") && strings.Contains(e.Detail, a.ID)
		case e.ID == stateless:
			statelessHeld = e.Decision == "allow" && e.Outcome == "held" && strings.Contains(e.Detail, "input_required")
		case e.ID == denied:
			deniedCall = e.Reason == "approval_denied" && strings.Contains(e.Detail, "/admin/alice") && strings.Contains(e.Detail, "freeze")
		case e.Action == "approvals.approve" && e.Target == a.ID && strings.HasSuffix(e.Src, "/admin/alice"):
			approvedBy = e.Decision == "allow"
		case e.Action == "approvals.approve" && e.Target == a.ID && strings.HasSuffix(e.Src, "/admin/mallory"):
			refused = e.Decision == "deny" && e.Reason == "not_approver"
		}
	}
	if !approvedCall || !deniedCall || !approvedBy || !refused || !statelessHeld {
		t.Errorf("audit trail: approved call with approver %v, denied call %v, alice's approval %v, mallory's refusal %v, stateless call held with input_required %v",
			approvedCall, deniedCall, approvedBy, refused, statelessHeld)
	}
	// The table people read names the approver and the approval.
	table := m.must("audit", "--tool", "get-sum", "--limit", "0", "--state", m.admin)
	if !strings.Contains(table, "approvals.approve "+a.ID) || !strings.Contains(table, "alice") {
		t.Errorf("agentmesh audit --tool get-sum does not show alice's approval:\n%s", table)
	}
	m.verifyAudit()
}

// statelessHeldCall makes a held drop_table call with the Go SDK's client at
// protocol 2026-07-28, answers the gateway's input_required by accepting,
// approves the hold as approver, and checks the answer. It returns the id
// of the held call's event.
func (m *mesh) statelessHeldCall(agent, approver string) string {
	t := m.t
	t.Helper()
	url, token := m.connectHTTP("ledger", agent)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	asked := make(chan string, 1)
	cl := mcp.NewClient(&mcp.Implementation{Name: "held", Version: "e2e"}, &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			select {
			case asked <- req.Params.Message:
			default:
			}
			return &mcp.ElicitResult{Action: "accept"}, nil
		},
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{tr, token}}}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	type result struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "drop_table", Arguments: map[string]any{"text": "payments"}})
		done <- result{res, err}
	}()
	a := m.waitPending(approver, "drop_table")
	select {
	case msg := <-asked:
		if !strings.Contains(msg, "drop_table waits for approval by group:oncall (approval "+a.ID+")") {
			t.Errorf("the stateless client was asked %q", msg)
		}
	case <-ctx.Done():
		t.Fatal("the stateless client was never asked")
	}
	m.must("approvals", "approve", a.ID, "--state", approver)
	r := <-done
	if r.err != nil || r.res.IsError || len(r.res.Content) == 0 {
		t.Fatalf("approved stateless call: %v %+v", r.err, r.res)
	}
	if txt, ok := r.res.Content[0].(*mcp.TextContent); !ok || !strings.Contains(txt.Text, "dropped") {
		t.Errorf("approved stateless drop_table returned %+v", r.res.Content[0])
	}
	return a.EventID
}
