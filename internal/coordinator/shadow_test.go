package coordinator_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

const (
	shadowActive = `{"grants":[{"src":["agent:a1"],"dst":["tool:ledger"],"tools":["read","write"]}]}`
	shadowNarrow = `{"grants":[{"src":["agent:a1"],"dst":["tool:ledger"],"tools":["read"]}]}`
)

func shadowStatus(t *testing.T, admin *controlclient.Client) controlapi.ShadowStatus {
	t.Helper()
	var st controlapi.ShadowStatus
	if err := admin.Call(context.Background(), http.MethodGet, controlapi.PathShadowStatus, nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// shadowEvent is a request event recorded by the ledger gateway: agent a1
// called tool, decided active, with the shadow's decision sh (nil: none).
func shadowEvent(i int, base time.Time, tool string, active audit.Decision, sh *audit.ShadowDecision) audit.Event {
	e := eventsAt(ledgerID, i, 1, base)[0]
	e.Src, e.Tool, e.Decision, e.Shadow = "spiffe://test.mesh/agent/a1", tool, active, sh
	return e
}

func TestShadowPolicyApplyStatusPromoteAndClear(t *testing.T) {
	m := startMesh(t)
	ledger := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "ledger", "")
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "a1", "")
	v1 := m.applyPolicy(shadowActive)
	ctx := context.Background()

	if st := shadowStatus(t, m.admin); st.Shadow.Version != 0 || st.ActiveVersion != v1 || len(st.Groups) != 0 {
		t.Fatalf("status without a shadow = %+v", st)
	}
	// Validated as an apply is.
	err := m.admin.Call(ctx, http.MethodPost, controlapi.PathShadow, controlapi.PolicyApplyRequest{Document: `{"grants":[{"bogus":1}]}`}, nil)
	if apiCode(err) != "invalid_policy" {
		t.Fatalf("invalid shadow: %v, want invalid_policy", err)
	}
	var sp controlapi.ShadowPolicy
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathShadow, controlapi.PolicyApplyRequest{Document: shadowNarrow}, &sp); err != nil {
		t.Fatal(err)
	}
	if sp.Version != 1 || sp.Name != "shadow-1" {
		t.Fatalf("applied shadow = %+v", sp)
	}

	// The gateway's view carries the shadow's projection; an agent's none.
	nm, err := ledger.Netmap(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if nm.Shadow == nil || nm.Shadow.Version != 1 || !nm.Shadow.Projected() || nm.Policy.Version != v1 {
		t.Fatalf("gateway's netmap shadow = %+v, policy %+v", nm.Shadow, nm.Policy)
	}
	if nm, err := agent.Netmap(ctx, -1); err != nil || nm.Shadow != nil {
		t.Fatalf("agent's netmap shadow = %+v, %v", nm.Shadow, err)
	}

	// The gateway records differences; status groups this shadow's.
	base := m.clock.Now()
	deny := &audit.ShadowDecision{Decision: audit.Deny, Reason: "not_granted", PolicyVersion: "shadow-1"}
	events := []audit.Event{
		shadowEvent(0, base, "write", audit.Allow, deny),
		shadowEvent(1, base, "read", audit.Allow, nil),
		shadowEvent(2, base, "write", audit.Allow, deny),
		shadowEvent(3, base, "write", audit.Allow, &audit.ShadowDecision{Decision: audit.Deny, PolicyVersion: "shadow-9"}),
		shadowEvent(4, base, "write", audit.Allow, deny),
	}
	if _, code := ship(t, ledger, events); code != "" {
		t.Fatalf("ship: %s", code)
	}
	st := shadowStatus(t, m.admin)
	if st.Shadow.Version != 1 || st.Differences != 3 || st.Requests != 5 || len(st.Groups) != 1 {
		t.Fatalf("status = %+v", st)
	}
	g := st.Groups[0]
	if g.Src != "spiffe://test.mesh/agent/a1" || g.Dst != ledgerID || g.Tool != "write" || g.Active != "allow" || g.Shadow != "deny" ||
		g.Count != 3 || len(g.Examples) != 3 || g.Examples[0] != events[0].ID || !g.First.Equal(events[0].Time) || !g.Last.Equal(events[4].Time) {
		t.Fatalf("group = %+v", g)
	}

	// Promote: the shadow becomes the active policy, as an apply would,
	// and the shadow is cleared.
	var pv controlapi.PolicyVersion
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathShadowPromote, struct{}{}, &pv); err != nil {
		t.Fatal(err)
	}
	if pv.Version != v1+1 {
		t.Fatalf("promoted to %+v, want version %d", pv, v1+1)
	}
	var active controlapi.PolicyVersion
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &active); err != nil {
		t.Fatal(err)
	}
	if active.Version != pv.Version || active.Document != shadowNarrow || !strings.Contains(active.Note, "shadow-1") {
		t.Fatalf("active after promote = %+v", active)
	}
	nm, err = ledger.Netmap(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if nm.Shadow != nil || nm.Policy.Version != pv.Version {
		t.Fatalf("after promote the gateway's netmap has shadow %+v, policy %d", nm.Shadow, nm.Policy.Version)
	}
	if st := shadowStatus(t, m.admin); st.Shadow.Version != 0 {
		t.Fatalf("status after promote = %+v", st)
	}
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathShadowPromote, struct{}{}, nil); apiCode(err) != "not_found" {
		t.Fatalf("second promote: %v, want not_found", err)
	}

	// Clear: a new shadow, then none; the versions go on.
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathShadow, controlapi.PolicyApplyRequest{Document: shadowActive}, &sp); err != nil {
		t.Fatal(err)
	}
	if sp.Version != 3 { // 1 applied, 2 the promote's clearing, 3
		t.Fatalf("second shadow = %+v", sp)
	}
	if err := m.admin.Call(ctx, http.MethodDelete, controlapi.PathShadow, nil, nil); err != nil {
		t.Fatal(err)
	}
	var got controlapi.ShadowPolicy
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathShadow, nil, &got); err != nil || got.Version != 0 {
		t.Fatalf("shadow after clear = %+v, %v", got, err)
	}
	if err := m.admin.Call(ctx, http.MethodDelete, controlapi.PathShadow, nil, nil); apiCode(err) != "not_found" {
		t.Fatalf("second clear: %v, want not_found", err)
	}

	// Every change is audited as an admin action (the query answers
	// newest first).
	var actions []string
	for _, e := range m.auditEvents(t, "kind=admin") {
		if strings.HasPrefix(e.Action, "policy.") {
			actions = append(actions, e.Action+" "+e.Target+" "+string(e.Decision))
		}
	}
	want := []string{"policy.apply v1 allow", "policy.shadow.apply  deny", "policy.shadow.apply shadow-1 allow",
		"policy.apply v2 allow", "policy.shadow.apply shadow-3 allow", "policy.shadow.clear shadow-3 allow"}
	if got := strings.Join(reverse(actions), "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("admin actions:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

// TestShadowPolicySurvivesRestart: the shadow is stored, not only held.
func TestShadowPolicySurvivesRestart(t *testing.T) {
	m := startMesh(t)
	ledger := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "ledger", "")
	m.applyPolicy(shadowActive)
	if err := m.admin.Call(context.Background(), http.MethodPost, controlapi.PathShadow, controlapi.PolicyApplyRequest{Document: shadowNarrow}, nil); err != nil {
		t.Fatal(err)
	}
	ledgerDir := ledger.Dir()
	m.stop()
	m.start()
	ledger = m.client(ledgerDir.Path())
	nm, err := ledger.Netmap(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	if nm.Shadow == nil || nm.Shadow.Version != 1 {
		t.Fatalf("after a restart the gateway's shadow is %+v", nm.Shadow)
	}
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// TestShadowPolicyAcrossACluster: on PostgreSQL, a shadow applied at one
// coordinator reaches a gateway watching another, and a promote at the
// second clears it at the first.
func TestShadowPolicyAcrossACluster(t *testing.T) {
	srv := pgtest.Shared(t)
	m := startShared(t, srv, 2)
	ctx := context.Background()
	coordinatortest.ApplyPolicy(t, m.admin[0], `{"grants":[{"src":["*"],"dst":["tool:gw"],"tools":["read","write"]}]}`)
	_, dir := m.joinThrough(0, 0, "gw")
	if err := m.admin[0].Call(ctx, http.MethodPost, controlapi.PathShadow, controlapi.PolicyApplyRequest{Document: `{"grants":[{"src":["*"],"dst":["tool:gw"],"tools":["read"]}]}`}, nil); err != nil {
		t.Fatal(err)
	}
	awaitNetmap(t, m.clientOf(dir, 1), func(nm *netmap.Netmap) bool { return nm.Shadow != nil && nm.Shadow.Version == 1 })
	var pv controlapi.PolicyVersion
	if err := m.admin[1].Call(ctx, http.MethodPost, controlapi.PathShadowPromote, struct{}{}, &pv); err != nil {
		t.Fatal(err)
	}
	awaitNetmap(t, m.clientOf(dir, 0), func(nm *netmap.Netmap) bool { return nm.Shadow == nil && nm.Policy.Version == pv.Version })
}
