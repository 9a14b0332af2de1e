package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/demo"
)

// shadowCandidate is examples/policy.hujson's ledger grants changed: the
// teller loses history, the auditor gains transfer.
const shadowCandidate = `{
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance", "transfer"]},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance", "history", "transfer"], "prompts": ["monthly-report"]},
  ],
}`

// waitShadow runs the status command until done accepts it, waking on
// each append to the coordinator's trail; it fails the test after a
// deadline.
func waitShadow(t *testing.T, d *demo.Mesh, env map[string]string, done func(controlapi.ShadowStatus) bool) controlapi.ShadowStatus {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		appended := d.Coordinator.AuditAppended()
		code, out, errOut := run(t, env, "policy", "shadow", "status", "--json")
		if code != 0 {
			t.Fatalf("policy shadow status: exit %d: %s", code, errOut)
		}
		var st controlapi.ShadowStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		if done(st) {
			return st
		}
		select {
		case <-appended:
		case <-deadline.C:
			t.Fatalf("shadow status never got there: %+v", st)
		}
	}
}

func shadowGroup(st controlapi.ShadowStatus, src, tool string) *controlapi.ShadowGroup {
	for i, g := range st.Groups {
		if strings.HasSuffix(g.Src, "/agent/"+src) && g.Tool == tool {
			return &st.Groups[i]
		}
	}
	return nil
}

// TestShadowPolicyRecordsLiveDifferencesThenPromotes drives a real
// coordinator and ledger gateway: a shadow applied with the CLI is
// evaluated on live calls without changing what is enforced, status
// summarises exactly the calls it would decide otherwise, and promote puts
// it in force.
func TestShadowPolicyRecordsLiveDifferencesThenPromotes(t *testing.T) {
	d, ctx := startTestMesh(t)
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	teller, _, err := d.Agent(ctx, "teller", nil)
	if err != nil {
		t.Fatal(err)
	}
	auditor, _, err := d.Agent(ctx, "auditor", nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func(s *mcp.ClientSession, tool string) error {
		args := map[string]any{"account": "alice"}
		switch tool {
		case "history":
			args = map[string]any{}
		case "transfer":
			args = map[string]any{"from": "alice", "to": "bob", "amount": 1}
		}
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err == nil && res.IsError {
			t.Fatalf("%s: the ledger answered an error", tool)
		}
		return err
	}

	if code, out, _ := run(t, env, "policy", "shadow", "status"); code != 0 || !strings.Contains(out, "no shadow policy") {
		t.Fatalf("status before any shadow: %d %q", code, out)
	}
	file := filepath.Join(t.TempDir(), "candidate.hujson")
	if err := os.WriteFile(file, []byte(shadowCandidate), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, env, "policy", "shadow", "apply", file); code != 0 || !strings.Contains(out, "shadow-1") {
		t.Fatalf("policy shadow apply: %d %q %q", code, out, errOut)
	}

	// The gateway takes the shadow up as soon as its view changes: until
	// a teller history call (allowed, and denied by the shadow) shows as
	// a difference, call again, each time waiting for the call's event to
	// reach the trail. Each call is allowed throughout.
	tellerHistories := func() int {
		code, out, _ := run(t, env, "audit", "--src", "agent:teller", "--tool", "history", "--kind", "request", "--json")
		if code != 0 {
			t.Fatalf("audit: exit %d", code)
		}
		return strings.Count(out, "\n")
	}
	var before controlapi.ShadowStatus
	for n := 1; ; n++ {
		if err := call(teller, "history"); err != nil {
			t.Fatalf("teller history with a shadow applied: %v", err)
		}
		waitShadow(t, d, env, func(controlapi.ShadowStatus) bool { return tellerHistories() == n })
		before = waitShadow(t, d, env, func(controlapi.ShadowStatus) bool { return true })
		if shadowGroup(before, "teller", "history") != nil {
			break
		}
		if n == 1000 {
			t.Fatal("the gateway never evaluated the shadow")
		}
	}
	histories := shadowGroup(before, "teller", "history").Count

	// Known traffic: three calls both allow, two the active policy denies
	// and the shadow would allow.
	for range 3 {
		if err := call(teller, "balance"); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := call(auditor, "transfer"); err == nil || !strings.Contains(err.Error(), "not_granted") {
			t.Fatalf("auditor transfer under the active policy: %v, want not_granted", err)
		}
	}
	st := waitShadow(t, d, env, func(st controlapi.ShadowStatus) bool {
		g := shadowGroup(st, "auditor", "transfer")
		return g != nil && g.Count == 2
	})
	if st.Shadow.Name != "shadow-1" || st.Differences != histories+2 || len(st.Groups) != 2 || st.Requests < before.Requests+5 {
		t.Fatalf("status = %+v, want %d differences in two groups", st, histories+2)
	}
	g := shadowGroup(st, "auditor", "transfer")
	if g.Active != "deny" || g.Shadow != "allow" || len(g.Examples) != 2 || !strings.HasSuffix(g.Dst, "/tool/ledger") {
		t.Fatalf("auditor transfer group = %+v", g)
	}
	if h := shadowGroup(st, "teller", "history"); h.Active != "allow" || h.Shadow != "deny" || h.Count != histories {
		t.Fatalf("teller history group = %+v", h)
	}
	if shadowGroup(st, "teller", "balance") != nil {
		t.Fatal("calls both policies allow are listed as differences")
	}
	// The table names the same.
	if code, out, _ := run(t, env, "policy", "shadow", "status"); code != 0 || !strings.Contains(out, "tool:transfer") || !strings.Contains(out, "deny -> allow") || !strings.Contains(out, g.Examples[0]) {
		t.Fatalf("status table: %d %q", code, out)
	}
	// The events themselves carry both decisions.
	code, out, _ := run(t, env, "audit", "--src", "agent:auditor", "--tool", "transfer", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("audit of the auditor's transfers: %d %q", code, out)
	}
	for _, l := range lines {
		if !strings.Contains(l, `"decision":"deny"`) || !strings.Contains(l, `"shadow":{"decision":"allow","reason":"allowed","rule":"1","policy_version":"shadow-1"}`) {
			t.Fatalf("a difference's event: %s", l)
		}
	}

	// Promote: the candidate is in force; the teller's history is denied
	// once the gateway has the new view, and the shadow is gone.
	if code, out, errOut := run(t, env, "policy", "shadow", "promote"); code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("promote: %d %q %q", code, out, errOut)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		err := call(teller, "history")
		if err != nil && strings.Contains(err.Error(), "not_granted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("teller history after promote: %v, want not_granted", err)
		}
	}
	if err := call(auditor, "transfer"); err != nil {
		t.Fatalf("auditor transfer after promote: %v", err)
	}
	if code, out, _ := run(t, env, "policy", "shadow", "status"); code != 0 || !strings.Contains(out, "no shadow policy") {
		t.Fatalf("status after promote: %d %q", code, out)
	}
	_, out, _ = run(t, env, "policy", "history", "--json")
	var hist []controlapi.PolicyVersion
	if json.Unmarshal([]byte(out), &hist) != nil || len(hist) != 2 || !strings.Contains(hist[1].Note, "shadow-1") {
		t.Fatalf("history after promote: %q", out)
	}
}

func TestAuditTableShowsTheShadowDecision(t *testing.T) {
	e := audit.Event{Kind: audit.KindRequest, Method: "tools/call", Tool: "transfer", Decision: audit.Deny, Reason: "not_granted",
		Shadow: &audit.ShadowDecision{Decision: audit.Allow, Reason: "allowed", Rule: "1", PolicyVersion: "shadow-1"}}
	if got := eventRow(e)[6]; got != "not_granted (shadow-1: allow allowed)" {
		t.Fatalf("reason cell = %q", got)
	}
	e.Shadow = nil
	if got := eventRow(e)[6]; got != "not_granted" {
		t.Fatalf("reason cell without a shadow = %q", got)
	}
}
