package coordinator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

const approvalPolicy = `{
  "groups": {"group:oncall": ["admin:alice", "tag:oncall"]},
  "annotations": {"tool:repo": {"destructive": ["push"]}},
  "grants": [
    {"src": ["agent:dev"], "dst": ["tool:repo"], "tools": ["destructive:*"], "approval": "group:oncall", "approval_timeout": "10m"},
    {"src": ["agent:dev"], "dst": ["tool:repo"], "tools": ["*"]},
  ],
}`

func auditEvents(t *testing.T, ctx context.Context, admin *controlclient.Client) []audit.Event {
	t.Helper()
	body, err := admin.Stream(ctx, controlapi.PathAudit)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var out []audit.Event
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestApprovalsDecidedOnlyByTheGroupAndAudited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := coordinatortest.Start(t, coordinatortest.Options{})
	m.ApplyPolicy(approvalPolicy)
	repo := m.Client(m.Join("tool", "repo"))
	dev := m.Client(m.Join("agent", "dev"))
	alice := m.Client(m.Join("admin", "alice"))
	bob := m.Client(m.Join("admin", "bob", "tag:oncall"))
	mallory := m.Client(m.Join("admin", "mallory"))

	req := controlapi.ApprovalRequest{Caller: "spiffe://test.mesh/agent/dev", Tool: "push", Grant: 0, Group: "group:oncall",
		PolicyVersion: "1", Timeout: 10 * time.Minute, EventID: "ev1"}
	// Only a tool node's gateway holds calls, and only for a grant that
	// requires that approval.
	if err := dev.Call(ctx, http.MethodPost, controlapi.PathApprovals, req, nil); apiCode(err) != string(reason.NotServingKind) {
		t.Errorf("an agent registered a hold: %v", err)
	}
	bad := req
	bad.Grant = 1
	if err := repo.Call(ctx, http.MethodPost, controlapi.PathApprovals, bad, nil); apiCode(err) != string(reason.NotGranted) {
		t.Errorf("a hold for a grant without approval: %v", err)
	}
	var a controlapi.Approval
	if err := repo.Call(ctx, http.MethodPost, controlapi.PathApprovals, req, &a); err != nil {
		t.Fatal(err)
	}
	if a.Status != controlapi.ApprovalPending || a.Gateway != repo.ID().String() {
		t.Fatalf("registered %+v", a)
	}
	var list []controlapi.Approval
	if err := mallory.Call(ctx, http.MethodGet, controlapi.PathApprovals, nil, &list); err != nil || len(list) != 1 || list[0].ID != a.ID {
		t.Fatalf("list: %v %+v", err, list)
	}
	// Another gateway cannot read or withdraw it.
	other := m.Client(m.Join("tool", "other"))
	if err := other.Call(ctx, http.MethodGet, controlapi.PathApprovals+"/"+a.ID, nil, nil); apiCode(err) != string(reason.NotFound) {
		t.Errorf("another gateway read the approval: %v", err)
	}

	// mallory is an admin, not in group:oncall: refused, and audited.
	err := mallory.Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/approve", controlapi.ApprovalDecision{}, nil)
	if apiCode(err) != string(reason.NotApprover) {
		t.Fatalf("mallory approved: %v", err)
	}
	var refused bool
	for _, e := range auditEvents(t, ctx, m.Admin) {
		if e.Action == "approvals.approve" && e.Target == a.ID && e.Src == mallory.ID().String() && e.Decision == audit.Deny && e.Reason == reason.NotApprover {
			refused = true
		}
	}
	if !refused {
		t.Error("the refused approval is not in the audit trail")
	}
	var got controlapi.Approval
	if err := repo.Call(ctx, http.MethodGet, controlapi.PathApprovals+"/"+a.ID, nil, &got); err != nil || got.Status != controlapi.ApprovalPending {
		t.Fatalf("after mallory: %v %+v", err, got)
	}

	// The gateway's long poll learns alice's approval.
	polled := make(chan controlapi.Approval, 1)
	go func() {
		var p controlapi.Approval
		if err := repo.Call(ctx, http.MethodGet, controlapi.PathApprovals+"/"+a.ID+"?wait=1", nil, &p); err != nil {
			t.Error(err)
		}
		polled <- p
	}()
	if err := alice.Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/approve", controlapi.ApprovalDecision{}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != controlapi.ApprovalApproved || got.DecidedBy != alice.ID().String() {
		t.Errorf("approved: %+v", got)
	}
	// The long poll may have answered pending if it ran out first; it
	// never answers anything else.
	if p := <-polled; p.Status != controlapi.ApprovalApproved && p.Status != controlapi.ApprovalPending {
		t.Errorf("long poll answered %+v", p)
	}
	if err := repo.Call(ctx, http.MethodGet, controlapi.PathApprovals+"/"+a.ID+"?wait=1", nil, &got); err != nil || got.Status != controlapi.ApprovalApproved {
		t.Errorf("after approval: %v %+v", err, got)
	}
	var approved bool
	for _, e := range auditEvents(t, ctx, m.Admin) {
		if e.Action == "approvals.approve" && e.Target == a.ID && e.Src == alice.ID().String() && e.Decision == audit.Allow {
			approved = true
		}
	}
	if !approved {
		t.Error("the approval and its approver are not in the audit trail")
	}
	// Decided once: bob (in the group by tag) cannot decide it again.
	err = bob.Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/deny", controlapi.ApprovalDecision{Reason: "late"}, nil)
	if apiCode(err) != string(reason.ApprovalDecided) {
		t.Errorf("second decision: %v", err)
	}

	// bob denies a second one, with a reason; a withdrawn one cannot be
	// decided.
	if err := repo.Call(ctx, http.MethodPost, controlapi.PathApprovals, req, &a); err != nil {
		t.Fatal(err)
	}
	if err := bob.Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/deny", controlapi.ApprovalDecision{Reason: "freeze"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != controlapi.ApprovalDenied || got.Note != "freeze" || got.DecidedBy != bob.ID().String() {
		t.Errorf("denied: %+v", got)
	}
	if err := repo.Call(ctx, http.MethodPost, controlapi.PathApprovals, req, &a); err != nil {
		t.Fatal(err)
	}
	if err := repo.Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/withdraw", controlapi.ApprovalDecision{Reason: "cancelled"}, nil); err != nil {
		t.Fatal(err)
	}
	err = alice.Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/approve", controlapi.ApprovalDecision{}, nil)
	if apiCode(err) != string(reason.ApprovalDecided) {
		t.Errorf("approving a withdrawn call: %v", err)
	}
	if err := alice.Call(ctx, http.MethodGet, controlapi.PathApprovals, nil, &list); err != nil || len(list) != 0 {
		t.Errorf("pending after all decided: %v %+v", err, list)
	}
	if err := alice.Call(ctx, http.MethodGet, controlapi.PathApprovals+"?all=1", nil, &list); err != nil || len(list) != 3 {
		t.Errorf("all: %v %d", err, len(list))
	}
}

// TestApprovalsAcrossACluster: on PostgreSQL, an approval registered at
// one coordinator is decided at another, and the gateway's long poll at
// the first learns it.
func TestApprovalsAcrossACluster(t *testing.T) {
	srv := pgtest.Shared(t)
	m := startShared(t, srv, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	approver := m.admin[1].ID().Name
	doc := `{
  "groups": {"group:oncall": ["admin:` + string(approver) + `"]},
  "grants": [{"src": ["*"], "dst": ["tool:gw"], "tools": ["push"], "approval": "group:oncall"}],
}`
	v := coordinatortest.ApplyPolicy(t, m.admin[0], doc)
	gw, dir := m.joinThrough(0, 0, "gw")
	awaitNetmap(t, m.clientOf(dir, 1), func(nm *netmap.Netmap) bool { return nm.Policy.Version >= v })
	gw = m.clientOf(dir, 0)
	var a controlapi.Approval
	req := controlapi.ApprovalRequest{Caller: "spiffe://test.mesh/agent/dev", Tool: "push", Grant: 0, Group: "group:oncall",
		PolicyVersion: "1", Timeout: policy.DefaultApprovalTimeout, EventID: "ev1"}
	if err := gw.Call(ctx, http.MethodPost, controlapi.PathApprovals, req, &a); err != nil {
		t.Fatal(err)
	}
	polled := make(chan controlapi.Approval, 1)
	go func() {
		var p controlapi.Approval
		for p.Status == "" || p.Status == controlapi.ApprovalPending {
			if err := gw.Call(ctx, http.MethodGet, controlapi.PathApprovals+"/"+a.ID+"?wait=1", nil, &p); err != nil {
				t.Error(err)
				break
			}
		}
		polled <- p
	}()
	if err := m.admin[1].Call(ctx, http.MethodPost, controlapi.PathApprovals+"/"+a.ID+"/deny", controlapi.ApprovalDecision{Reason: "no"}, nil); err != nil {
		t.Fatal(err)
	}
	if p := <-polled; p.Status != controlapi.ApprovalDenied || p.DecidedBy != m.admin[1].ID().String() || p.Note != "no" {
		t.Errorf("the gateway's long poll at the other coordinator answered %+v", p)
	}
}
