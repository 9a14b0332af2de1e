package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/policy/replay"
	"github.com/agentmesh/agentmesh/internal/store"
)

const replayActive = `{
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance", "history", "list_accounts"]},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["transfer"], "when": "args.amount <= 500"},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance", "history"]},
  ],
}`

// replayNarrowed takes balance from the teller and caps transfers at 300.
const replayNarrowed = `{
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["history", "list_accounts"]},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["transfer"], "when": "args.amount <= 300"},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance", "history"]},
  ],
}`

// TestPolicyReplayOfRecordedTraffic records calls through a real gateway
// (the demo mesh: coordinator, ledger behind its gateway, connectors), then
// replays the active policy (no difference, every decision reproduced) and
// a narrowed one (exactly the calls it would newly deny).
func TestPolicyReplayOfRecordedTraffic(t *testing.T) {
	d, ctx := startTestMesh(t)
	if _, err := d.ApplyPolicy(ctx, replayActive); err != nil {
		t.Fatal(err)
	}
	teller, _, err := d.Agent(ctx, "teller", nil)
	if err != nil {
		t.Fatal(err)
	}
	auditor, _, err := d.Agent(ctx, "auditor", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway enforces the new version once the teller sees
	// list_accounts (the example policy hides it); lists are not policy
	// decisions, so probing leaves nothing for replay to judge.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := teller.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(res.Tools, func(tl *mcp.Tool) bool { return tl.Name == "list_accounts" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway never took the new policy")
		}
		select { // the probe's own event reaches the coordinator: look again then
		case <-d.Coordinator.AuditAppended():
		case <-time.After(time.Until(deadline)):
		}
	}
	calls := 0
	call := func(s *mcp.ClientSession, tool string, args map[string]any) {
		calls++
		s.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args}) // denials are answers too
	}
	// rounds of a day's traffic: 20 calls each, of which the narrowed
	// policy newly denies 5 (3 balances, the transfers of 400 and 500).
	rounds := 100
	if testing.Short() {
		rounds = 1
	}
	for range rounds {
		for range 3 {
			call(teller, "balance", map[string]any{"account": "alice"})
		}
		for amount := 100; amount <= 1000; amount += 100 {
			call(teller, "transfer", map[string]any{"from": "alice", "to": "bob", "amount": amount})
		}
		call(teller, "list_accounts", nil)
		call(teller, "transfer", map[string]any{"from": "alice", "to": "bob", "amount": 100, "password": "hunter2"})
		for range 2 {
			call(auditor, "balance", map[string]any{"account": "bob"})
			call(auditor, "transfer", map[string]any{"from": "bob", "to": "alice", "amount": 1})
		}
	}
	// Wait until the gateway has shipped every call's event.
	deadline = time.Now().Add(60 * time.Second)
	for {
		appended := d.Coordinator.AuditAppended()
		if requestEvents(t, ctx, d, "allow")+requestEvents(t, ctx, d, "deny") >= calls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator has not received all %d calls", calls)
		}
		select {
		case <-appended:
		case <-time.After(time.Until(deadline)):
		}
	}

	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	dir := t.TempDir()
	// The trail keeps the one argument a when reads, and nothing else.
	_, trail, _ := run(t, env, "audit", "export", "--format", "jsonl", "--method", "tools/call", "--src", "agent:teller")
	if strings.Contains(trail, "hunter2") || strings.Contains(trail, `\"from\"`) || !strings.Contains(trail, `"args":"{\"amount\":400}"`) {
		t.Fatalf("the trail keeps other arguments than the when reads:\n%s", trail)
	}
	replayFile := func(doc string) (int, replay.Report, string) {
		t.Helper()
		f := filepath.Join(dir, "p.hujson")
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := run(t, env, "policy", "replay", f, "--since", "1h", "--json")
		var rep replay.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("policy replay --json: %v: %q %q", err, out, errOut)
		}
		return code, rep, errOut
	}

	code, rep, errOut := replayFile(replayActive)
	if code != 0 || rep.DisagreementCount != 0 || rep.Changed != 0 {
		t.Fatalf("replay of the active policy: exit %d, %+v, %s", code, rep, errOut)
	}
	// Every call was decided by the policy and is reproduced exactly.
	if rep.Judged != int64(calls) || rep.Checked != int64(calls) || rep.NotJudgedTotal() != 0 || !slices.Equal(rep.CheckedVersions, []string{"2"}) {
		t.Fatalf("replay of the active policy judged %d and checked %d of %d calls: %+v", rep.Judged, rep.Checked, calls, rep)
	}

	code, rep, errOut = replayFile(replayNarrowed)
	if code != 0 || rep.DisagreementCount != 0 {
		t.Fatalf("replay of the narrowed policy: exit %d, %+v, %s", code, rep, errOut)
	}
	type group struct {
		src, item, from, to string
		count               int64
	}
	var got []group
	for _, c := range rep.Changes {
		if c.Dst != "tool:ledger" || len(c.Examples) == 0 || c.First.After(c.Last) {
			t.Fatalf("change %+v", c)
		}
		got = append(got, group{c.Src, c.Item, c.From, c.To, c.Count})
	}
	want := []group{
		{"agent:teller", "tool:balance", "allow", "deny (not_granted)", 3 * int64(rounds)},
		{"agent:teller", "tool:transfer", "allow", "deny (when_false)", 2 * int64(rounds)}, // 400 and 500
	}
	if !slices.Equal(got, want) || rep.Changed != 5*int64(rounds) {
		t.Fatalf("changes %+v, want %+v", got, want)
	}

	// The table for people says the same.
	f := filepath.Join(dir, "p.hujson")
	code, out, _ := run(t, env, "policy", "replay", f)
	if code != 0 || !strings.Contains(out, "allow -> deny (when_false)") || !strings.Contains(out, "self-check") {
		t.Fatalf("policy replay: exit %d\n%s", code, out)
	}

	// A recorded decision the active policy does not reproduce (here
	// edited in the database) is a bug replay reports, exiting 1.
	db, err := store.OpenSQLite(coordinator.DatabasePath(filepath.Join(d.Dir, "coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET body = CAST(replace(CAST(body AS TEXT), '"decision":"allow"', '"decision":"deny"') AS BLOB)
		WHERE seq = (SELECT max(seq) FROM audit_events WHERE CAST(body AS TEXT) LIKE '%"tool":"history"%' OR CAST(body AS TEXT) LIKE '%"tool":"list_accounts"%')`); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, env, "policy", "replay", f)
	if code == 0 || !strings.Contains(out, "replay disagrees with the recorded decision") || !strings.Contains(errOut, "bug") {
		t.Fatalf("policy replay over an edited decision: exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestParseSinceAcceptsDays(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"7d": now.AddDate(0, 0, -7), "0d": now, "90m": now.Add(-90 * time.Minute), "2026-11-01T00:00:00Z": time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
	} {
		if got, err := parseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"7x", "-1d", "d", "-1h"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}
