package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/policy"
)

// rightsJSON runs 'policy who|can --json' with args and decodes it.
func rightsJSON(t *testing.T, args ...string) rightsReport {
	t.Helper()
	code, out, errOut := run(t, nil, append([]string{"policy"}, append(args, "--json")...)...)
	if code != 0 {
		t.Fatalf("policy %v: exit %d: %s", args, code, errOut)
	}
	var rep rightsReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("policy %v --json: %v\n%s", args, err, out)
	}
	return rep
}

// rightOf returns the right of grant g for peer, or fails.
func rightOf(t *testing.T, rep rightsReport, peer string, g int) policy.Right {
	t.Helper()
	for _, r := range rep.Rights {
		if (r.Src == peer || r.Dst == peer) && r.Grant == g {
			return r
		}
	}
	t.Fatalf("no right of grant %d for %s in %+v", g, peer, rep.Rights)
	return policy.Right{}
}

func TestPolicyWhoAndCanAgainstARealCoordinator(t *testing.T) {
	d, ctx := startTestMesh(t)
	admin := d.Coordinator.AdminDir()

	// Before any gateway reported its tools, rights show the patterns.
	rep := rightsJSON(t, "who", "--dst", "tool:ledger", "--state", admin)
	if !rep.Registry || rep.ToolReports || rep.Policy != "version 1" {
		t.Fatalf("who before reports: %+v", rep)
	}
	if r := rightOf(t, rep, "agent:teller", 3); r.Via != "agent:teller" || r.ToolsSeen ||
		!slices.Equal(r.Tools, []string{"balance", "history", "transfer"}) || r.Line == 0 {
		t.Errorf("teller's right: %+v", r)
	}

	// A gateway reports its tools when a client first lists them; then
	// the globs are the tools seen.
	s, _, err := d.Agent(ctx, "teller", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if rep = rightsJSON(t, "who", "--dst", "tool:ledger", "--state", admin); rep.ToolReports {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ledger's gateway never reported its tools")
		}
	}
	var peers []string
	for _, r := range rep.Rights {
		peers = append(peers, r.Src)
		if !r.ToolsSeen {
			t.Errorf("right not expanded from the reports: %+v", r)
		}
	}
	if !slices.Equal(peers, []string{"agent:auditor", "agent:teller"}) {
		t.Errorf("who may reach the ledger: %v", peers)
	}
	if r := rightOf(t, rep, "agent:auditor", 4); !slices.Equal(r.Tools, []string{"balance", "history"}) || !slices.Equal(r.Prompts, []string{"monthly-report"}) {
		t.Errorf("auditor's right: %+v", r)
	}
	rep = rightsJSON(t, "who", "--dst", "tool:ledger", "--tool", "transfer", "--state", admin)
	if len(rep.Rights) != 1 || rep.Rights[0].Src != "agent:teller" || !slices.Equal(rep.Rights[0].Tools, []string{"transfer"}) {
		t.Errorf("who may call transfer: %+v", rep.Rights)
	}

	// can: what the auditor may use, in the table too.
	rep = rightsJSON(t, "can", "--src", "agent:auditor", "--state", admin)
	if len(rep.Rights) != 1 || rep.Rights[0].Dst != "tool:ledger" || rep.Rights[0].Grant != 4 {
		t.Errorf("can auditor: %+v", rep.Rights)
	}
	code, out, errOut := run(t, nil, "policy", "can", "--src", "agent:auditor", "--state", admin)
	if code != 0 || !strings.Contains(out, "tool:ledger") || !strings.Contains(out, "tools: balance history; prompts: monthly-report") {
		t.Errorf("can table: %d %q %q", code, out, errOut)
	}

	// A candidate file against the live registry and reports: a
	// conditional grant shows its when, and the nodes' tags come from
	// the registry.
	file := filepath.Join(t.TempDir(), "candidate.hujson")
	if err := os.WriteFile(file, []byte(`{"grants": [
  {"src": ["*"], "dst": ["tool:ledger"], "tools": ["bal*"], "when": "args.account == 'a'"},
]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	rep = rightsJSON(t, "who", "--dst", "tool:ledger", "--policy", file, "--state", admin)
	if len(rep.Rights) != 3 { // the admin node is one of the "*" too
		t.Fatalf("candidate rights: %+v", rep.Rights)
	}
	for _, r := range rep.Rights {
		if !r.Conditional || r.When != "args.account == 'a'" || !slices.Equal(r.Tools, []string{"balance"}) || r.Via != "*" {
			t.Errorf("candidate right: %+v", r)
		}
	}

	// Fully offline: the nodes from a file, no tool reports.
	_, nodesOut, _ := run(t, nil, "nodes", "list", "--json", "--state", admin)
	nodesFile := filepath.Join(t.TempDir(), "nodes.json")
	if err := os.WriteFile(nodesFile, []byte(nodesOut), 0o600); err != nil {
		t.Fatal(err)
	}
	rep = rightsJSON(t, "who", "--dst", "tool:ledger", "--policy", file, "--nodes", nodesFile)
	if !rep.Registry || rep.ToolReports || len(rep.Rights) != 3 || !slices.Equal(rep.Rights[0].Tools, []string{"bal*"}) {
		t.Errorf("offline who: %+v", rep)
	}
	code, out, errOut = run(t, nil, "policy", "who", "--dst", "tool:ledgr", "--state", admin)
	if code != 0 || !strings.Contains(errOut, "warning: no active node tool:ledgr is registered") || !strings.Contains(out, "nobody may reach tool:ledgr") {
		t.Errorf("who of a typo: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := run(t, nil, "policy", "who", "--policy", file); code != 2 || !strings.Contains(errOut, "--dst") {
		t.Errorf("who without --dst: %d %q", code, errOut)
	}
}

func TestPolicyValidateLintWarnsWithLinesAndExitsZero(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lint.hujson")
	if err := os.WriteFile(file, []byte(`{"grants": [
  {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["*"]},
  {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["read_*", "!write_*"]},
]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, nil, "policy", "validate", file)
	if code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("validate: %d %q %q", code, out, errOut)
	}
	for _, w := range []string{
		"warning: " + file + ":3:3: grants[1]: shadowed: earlier grants (0)",
		"warning: " + file + ":3:63: grants[1].tools[1]: \"!write_*\" excludes nothing",
	} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	// An error is still an error: exit 1.
	if err := os.WriteFile(file, []byte(`{"grants": [{"src": ["group:nope"], "dst": ["tool:t"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run(t, nil, "policy", "validate", file); code != 1 || !strings.Contains(errOut, "undefined group") {
		t.Errorf("invalid file: %d %q", code, errOut)
	}
}

// TestPolicyWhoShowsOnBehalfOf: a right that holds only for calls made
// with a person's delegation says so in the text output, not only in
// --json.
func TestPolicyWhoShowsOnBehalfOf(t *testing.T) {
	file := filepath.Join(t.TempDir(), "obo.hujson")
	if err := os.WriteFile(file, []byte(`{"grants": [
  {"src": ["user:alice@example.com"], "dst": ["tool:ledger"], "tools": ["*"]},
  {"src": ["agent:helper"], "dst": ["tool:ledger"], "tools": ["transfer"], "on_behalf_of": ["user:alice@example.com"]},
]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, nil, "policy", "who", "--dst", "tool:ledger", "--policy", file)
	if code != 0 {
		t.Fatalf("who: %d %s", code, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "agent:helper") && !strings.Contains(line, "on behalf of user:alice@example.com") {
			t.Errorf("helper's right does not say for whom: %q", line)
		}
	}
	if !strings.Contains(out, "agent:helper") {
		t.Fatalf("who lists no right of agent:helper:\n%s", out)
	}
}
