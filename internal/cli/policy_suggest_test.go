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

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/policy/replay"
)

// doneWhenActive is the policy the day's traffic runs under: three agents
// at the ledger, the clerks (by tag) granted history the clerk never uses.
const doneWhenActive = `{
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance", "history", "list_accounts"]},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["transfer"], "when": "args.amount <= 500"},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance", "history"]},
    {"src": ["tag:clerks"], "dst": ["tool:ledger"], "tools": ["balance", "history", "list_accounts"]},
  ],
}`

// doneWhenNarrowed takes balance from the teller and caps transfers at
// 300: replay and shadow mode must agree on what that denies.
const doneWhenNarrowed = `{
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["history", "list_accounts"]},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["transfer"], "when": "args.amount <= 300"},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance", "history"]},
    {"src": ["tag:clerks"], "dst": ["tool:ledger"], "tools": ["balance", "history", "list_accounts"]},
  ],
}`

// TestDoneWhenPolicyChangesAreNeverAGuess is issue 21's "done when": a day
// of traffic from three agents through a real gateway (a coordinator, the
// ledger behind its gateway, connectors), recorded with a narrowed
// candidate running as a shadow; then replay of the active policy
// reproduces every decision, replay of the candidate lists exactly the
// calls it newly denies, shadow mode recorded those same differences
// live, and suggest yields a policy that validates, passes its tests and
// allows every observed allowed call while granting strictly less.
func TestDoneWhenPolicyChangesAreNeverAGuess(t *testing.T) {
	d, ctx := startTestMesh(t)
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	dir := t.TempDir()
	write := func(name, doc string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	activeFile, narrowFile := write("active.hujson", doneWhenActive), write("narrowed.hujson", doneWhenNarrowed)
	if _, err := d.Join(ctx, "clerk", "agent", "tag:clerks"); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, env, "policy", "apply", activeFile); code != 0 {
		t.Fatalf("policy apply: %s", errOut)
	}
	sessions := map[string]*mcp.ClientSession{}
	for _, name := range []string{"teller", "auditor", "clerk"} {
		s, _, err := d.Agent(ctx, name, nil)
		if err != nil {
			t.Fatal(err)
		}
		sessions[name] = s
	}
	// The gateway has version 2 once the clerk sees list_accounts.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := sessions["clerk"].ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(res.Tools, func(tl *mcp.Tool) bool { return tl.Name == "list_accounts" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway never took the active policy")
		}
		select {
		case <-d.Coordinator.AuditAppended():
		case <-time.After(time.Until(deadline)):
		}
	}
	if code, _, errOut := run(t, env, "policy", "shadow", "apply", narrowFile); code != 0 {
		t.Fatalf("policy shadow apply: %s", errOut)
	}
	call := func(who, tool string, args map[string]any) {
		sessions[who].CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args}) // denials are answers too
	}
	// Probe until the gateway evaluates the shadow: a teller balance
	// shows as a difference. The window the rest looks at starts after.
	tellerBalances := func() int {
		code, out, _ := run(t, env, "audit", "--src", "agent:teller", "--tool", "balance", "--kind", "request", "--json")
		if code != 0 {
			t.Fatalf("audit: exit %d", code)
		}
		return strings.Count(out, "\n")
	}
	var before controlapi.ShadowStatus
	for n := 1; ; n++ {
		call("teller", "balance", map[string]any{"account": "alice"})
		waitShadow(t, d, env, func(controlapi.ShadowStatus) bool { return tellerBalances() == n })
		before = waitShadow(t, d, env, func(controlapi.ShadowStatus) bool { return true })
		if shadowGroup(before, "teller", "balance") != nil {
			break
		}
		if n == 1000 {
			t.Fatal("the gateway never evaluated the shadow")
		}
	}
	since := time.Now().UTC().Format(time.RFC3339Nano)
	baseline := requestEvents(t, ctx, d, "allow") + requestEvents(t, ctx, d, "deny")

	// The day: 22 calls a round, 5 of which the candidate newly denies
	// (3 teller balances, the transfers of 400 and 500).
	rounds := 100
	if testing.Short() {
		rounds = 2
	}
	calls := 0
	for range rounds {
		for range 3 {
			call("teller", "balance", map[string]any{"account": "alice"})
		}
		for amount := 100; amount <= 1000; amount += 100 {
			call("teller", "transfer", map[string]any{"from": "alice", "to": "bob", "amount": amount})
		}
		call("teller", "list_accounts", nil)
		call("teller", "transfer", map[string]any{"from": "alice", "to": "bob", "amount": 100, "password": "hunter2"})
		for range 2 {
			call("auditor", "balance", map[string]any{"account": "bob"})
			call("auditor", "transfer", map[string]any{"from": "bob", "to": "alice", "amount": 1})
		}
		for range 2 {
			call("clerk", "list_accounts", nil)
		}
		call("clerk", "balance", map[string]any{"account": "carol"})
		calls += 22
	}
	deadline = time.Now().Add(120 * time.Second)
	for {
		appended := d.Coordinator.AuditAppended()
		if requestEvents(t, ctx, d, "allow")+requestEvents(t, ctx, d, "deny") >= baseline+calls {
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
	after := waitShadow(t, d, env, func(controlapi.ShadowStatus) bool { return true })

	replayOf := func(f string) replay.Report {
		t.Helper()
		code, out, errOut := run(t, env, "policy", "replay", f, "--since", since, "--json")
		var rep replay.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || rep.DisagreementCount != 0 {
			t.Fatalf("policy replay %s: exit %d, %v: %q %q", f, code, err, out, errOut)
		}
		return rep
	}
	// Replay of the active policy reproduces every recorded decision.
	rep := replayOf(activeFile)
	if rep.Changed != 0 || rep.Judged != int64(calls) || rep.Checked != int64(calls) || rep.NotJudgedTotal() != 0 {
		t.Fatalf("replay of the active policy: %s, checked %d of %d calls", rep.Summary(), rep.Checked, calls)
	}
	// Replay of the candidate: exactly the calls it newly denies.
	rep = replayOf(narrowFile)
	type group struct {
		src, item, from, to string
		count               int64
	}
	var got []group
	for _, c := range rep.Changes {
		got = append(got, group{c.Src, c.Item, c.From, c.To, c.Count})
	}
	want := []group{
		{"agent:teller", "tool:balance", "allow", "deny (not_granted)", 3 * int64(rounds)},
		{"agent:teller", "tool:transfer", "allow", "deny (when_false)", 2 * int64(rounds)},
	}
	if !slices.Equal(got, want) || rep.Changed != 5*int64(rounds) {
		t.Fatalf("replay of the candidate: changes %+v, want %+v", got, want)
	}
	// Shadow mode recorded the same differences live: same groups, same
	// counts (status counts the probes too: they were before the window).
	var live []group
	for _, g := range after.Groups {
		n := g.Count
		if b := shadowGroup(before, g.Src[strings.LastIndex(g.Src, "/")+1:], g.Tool); b != nil {
			n -= b.Count
		}
		if n > 0 {
			live = append(live, group{"agent:" + g.Src[strings.LastIndex(g.Src, "/")+1:], "tool:" + g.Tool, g.Active, g.Shadow, n})
		}
	}
	slices.SortFunc(live, func(a, b group) int { return strings.Compare(a.item, b.item) })
	if len(live) != len(want) {
		t.Fatalf("shadow differences in the window %+v, replay predicted %+v", live, want)
	}
	for i, g := range live {
		if g.src != want[i].src || g.item != want[i].item || g.from != "allow" || g.to != "deny" || g.count != want[i].count {
			t.Fatalf("shadow differences in the window %+v, replay predicted %+v", live, want)
		}
	}

	// Suggest, over the same window, with argument bounds.
	code, out, errOut := run(t, env, "policy", "suggest", "--since", since, "--args", "--json")
	var sg replay.Suggestion
	if err := json.Unmarshal([]byte(out), &sg); err != nil || code != 0 {
		t.Fatalf("policy suggest --json: exit %d, %v: %s", code, err, errOut)
	}
	// Allowed a round: 3 teller balances, the transfers of 100..500, the
	// one with a password, list_accounts; 2 auditor balances; the clerk's
	// 3 calls. Denied: the 5 transfers over 500, the 2 auditor transfers.
	allowed := int64(rounds * (3 + 5 + 1 + 1 + 2 + 3))
	if sg.Allowed != allowed || sg.Denied != int64(calls)-allowed || sg.Check.AllowedChecked != allowed || sg.Check.NewlyDenied != 0 || sg.Check.NewlyAllowed != 0 {
		t.Fatalf("suggestion evidence: allowed %d denied %d (want %d of %d), check %+v", sg.Allowed, sg.Denied, allowed, calls, sg.Check)
	}
	sugFile := write("suggested.hujson", sg.Document)
	// It validates, and its tests (which it has) pass.
	if code, out, errOut := run(t, env, "policy", "validate", sugFile); code != 0 || !strings.Contains(out, "valid") || sg.Tests == 0 {
		t.Fatalf("policy validate of the suggestion: exit %d %q %q (%d tests)\n%s", code, out, errOut, sg.Tests, sg.Document)
	}
	// Replay of it over the window allows every observed allowed call.
	rep = replayOf(sugFile)
	for _, c := range rep.Changes {
		if c.From == "allow" {
			t.Fatalf("replay of the suggestion denies an observed allowed call: %+v\n%s", c, sg.Document)
		}
	}
	if rep.Judged != int64(calls) || rep.Changed != 0 {
		t.Fatalf("replay of the suggestion: %s", rep.Summary())
	}
	// Strictly less: history, which the active policy grants the teller,
	// the auditor and the clerk and nobody called, and transfers above
	// what the teller transferred, are denied by the suggestion.
	decide := func(file, src, tool, args string) bool {
		t.Helper()
		argv := []string{"policy", "check", "--src", src, "--dst", "tool:ledger", "--tool", tool, "--json"}
		if file != "" {
			argv = append(argv, "--file", file)
		}
		if args != "" {
			argv = append(argv, "--args", args)
		}
		code, out, errOut := run(t, env, argv...)
		var res struct{ Allow bool }
		if json.Unmarshal([]byte(out), &res) != nil || code != 0 {
			t.Fatalf("policy check: exit %d %q %q", code, out, errOut)
		}
		return res.Allow
	}
	for _, c := range []struct{ src, tool, args string }{
		{"agent:teller", "history", ""}, {"agent:auditor", "history", ""}, {"agent:clerk", "history", ""},
		{"agent:teller", "transfer", `{"amount":50}`},
	} {
		if !decide("", c.src, c.tool, c.args) || decide(sugFile, c.src, c.tool, c.args) {
			t.Errorf("%s %s %s: the active policy should allow it and the suggestion deny it", c.src, c.tool, c.args)
		}
	}
	// policy who says the same from the other end: three identities may
	// call history under the active policy, none under the suggestion.
	whoHistory := func(extra ...string) []string {
		t.Helper()
		code, out, errOut := run(t, env, append([]string{"policy", "who", "--dst", "tool:ledger", "--tool", "history", "--json"}, extra...)...)
		var res struct{ Rights []policy.Right }
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
			t.Fatalf("policy who: exit %d %q %q", code, out, errOut)
		}
		var srcs []string
		for _, r := range res.Rights {
			srcs = append(srcs, r.Src)
		}
		return srcs
	}
	if got, sugg := whoHistory(), whoHistory("--policy", sugFile); !slices.Equal(got, []string{"agent:auditor", "agent:clerk", "agent:teller"}) || len(sugg) != 0 {
		t.Errorf("who may call history: active %v, suggestion %v", got, sugg)
	}
	// ... and grants nothing the active policy does not: every call of
	// the window it allows was allowed (no denial replayed as allowed).
	if !decide(sugFile, "agent:teller", "transfer", `{"amount":500}`) || decide(sugFile, "agent:auditor", "transfer", `{"amount":1}`) {
		t.Errorf("the suggestion's transfer bounds are not the observed ones:\n%s", sg.Document)
	}
	// The active policy's grants nothing used: history in three grants.
	var unused []string
	for _, u := range sg.UnusedEntries {
		unused = append(unused, u.Entry)
	}
	if !slices.Equal(unused, []string{"history", "history", "history"}) || len(sg.UnusedGrants) != 0 {
		t.Fatalf("unused entries %+v, grants %+v", sg.UnusedEntries, sg.UnusedGrants)
	}
	// The known denial over the cap is pinned with the amount it was
	// refused for (the first one, 600).
	if !strings.Contains(sg.Document, `{"src": "agent:teller", "src_tags": [], "dst": "tool:ledger", "dst_tags": [], "args": {"amount":600}, "deny": ["tools/call transfer"]}`) {
		t.Errorf("the refused transfer is not pinned:\n%s", sg.Document)
	}
	// The text form: the policy on stdout, the report on stderr.
	code, out, errOut = run(t, env, "policy", "suggest", "--since", since)
	if code != 0 || !strings.HasPrefix(out, "// Suggested by `agentmesh policy suggest`") || strings.Contains(out, `"when"`) ||
		!strings.Contains(errOut, "replay over the same window allows all") || !strings.Contains(errOut, `grants[3].tools (line 6): "history" matched no call it decided`) {
		t.Fatalf("policy suggest: exit %d\n%s\n%s", code, out, errOut)
	}
}
