package cli

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/examples"
	"github.com/agentmesh/agentmesh/internal/controlapi"
)

// catalogJSON runs 'services --json' with args and decodes it.
func catalogJSON(t *testing.T, args ...string) controlapi.Catalog {
	t.Helper()
	code, out, errOut := run(t, nil, append([]string{"services", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("services %v: exit %d: %s", args, code, errOut)
	}
	var cat controlapi.Catalog
	if err := json.Unmarshal([]byte(out), &cat); err != nil {
		t.Fatalf("services %v --json: %v\n%s", args, err, out)
	}
	return cat
}

// allowedTools is the names of the tools of service that the catalog's
// identity may call, and every tool name listed.
func allowedTools(t *testing.T, cat controlapi.Catalog, service string) (allowed, all []string) {
	t.Helper()
	for _, s := range cat.Services {
		if s.Service != service {
			continue
		}
		for _, tl := range s.Tools {
			all = append(all, tl.Name)
			if tl.Access == nil {
				t.Fatalf("tool %s has no access although the catalog is for %q", tl.Name, cat.As)
			}
			if tl.Access.Allowed {
				allowed = append(allowed, tl.Name)
			}
		}
		return allowed, all
	}
	t.Fatalf("no %s in the catalog: %+v", service, cat)
	return nil, nil
}

func TestServicesListsTheLedgerItsToolsAndWhatEachAgentMayUse(t *testing.T) {
	d, ctx := startTestMesh(t)
	admin := d.Coordinator.AdminDir()

	// A gateway reports its tools when a client first lists them.
	s, _, err := d.Agent(ctx, "teller", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var cat controlapi.Catalog
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cat = catalogJSON(t, "--state", admin)
		if len(cat.Services) == 1 && len(cat.Services[0].Tools) == 4 && cat.Services[0].Status == "serving" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the catalog never listed the serving ledger with its 4 tools: %+v", cat)
		}
	}
	svc := cat.Services[0]
	if svc.Service != "tool:ledger" || len(svc.Addrs) == 0 || svc.LastSeen.IsZero() || svc.PinMode != "warn" ||
		cat.As != "" || svc.Access != nil || cat.PolicyVersion != 1 {
		t.Fatalf("catalog without --as: %+v", cat)
	}
	var names []string
	for _, tl := range svc.Tools {
		names = append(names, tl.Name)
		if !strings.HasPrefix(tl.Hash, "sha256:") || tl.PinStatus != "unpinned" || tl.Access != nil {
			t.Errorf("tool %+v", tl)
		}
	}
	if want := []string{"balance", "history", "list_accounts", "transfer"}; !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}

	// Per the example policy: the auditor reads, the teller also transfers.
	for _, c := range []struct {
		as   string
		want []string
	}{
		{"agent:auditor", []string{"balance", "history"}},
		{"agent:teller", []string{"balance", "history", "transfer"}},
	} {
		cat := catalogJSON(t, "--state", admin, "--as", c.as)
		allowed, all := allowedTools(t, cat, "tool:ledger")
		if cat.As != c.as || !slices.Equal(allowed, c.want) || len(all) != 4 {
			t.Errorf("--as %s: allowed %v of %v, want %v", c.as, allowed, all, c.want)
		}
		a := cat.Services[0].Access
		if a == nil || !a.Connect || len(a.ToolPatterns) == 0 {
			t.Errorf("--as %s: service access %+v", c.as, a)
		}
		for _, tl := range cat.Services[0].Tools {
			if tl.Name == "list_accounts" && tl.Access.Reason != "not_granted" {
				t.Errorf("--as %s: list_accounts denied for %q, want not_granted", c.as, tl.Access.Reason)
			}
		}
	}

	// The human form: aligned columns, and the note on what is not listed.
	code, out, errOut := run(t, nil, "services", "--state", admin, "--as", "agent:auditor")
	if code != 0 {
		t.Fatalf("services: %d %s", code, errOut)
	}
	for _, want := range []string{"access of agent:auditor", "tool:ledger  serving", "AGENT:AUDITOR",
		"denied (not_granted)", "allowed", "prompts are not listed"} {
		if !strings.Contains(out, want) {
			t.Errorf("human output lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(out, "\n")
	var toolLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, "tool:ledger  ") && !strings.Contains(l, "serving") {
			toolLines = append(toolLines, l)
		}
	}
	if len(toolLines) != 4 {
		t.Fatalf("want 4 tool lines:\n%s", out)
	}
	for _, l := range toolLines[1:] {
		if strings.Index(l, "unpinned") != strings.Index(toolLines[0], "unpinned") {
			t.Errorf("columns not aligned:\n%s", out)
		}
	}

	// A granted tool whose pin its definition does not match is hidden
	// and refused by the gateway: the catalog says so.
	hashes := map[string]string{}
	for _, tl := range svc.Tools {
		hashes[tl.Name] = tl.Hash
	}
	pinned := strings.Replace(string(examples.Policy), `"grants": [`, `"tool_pins": {"tool:ledger": {"tools": {"balance": "`+hashes["history"]+`", "history": "`+hashes["history"]+`"}}},
  "grants": [`, 1)
	if _, err := d.ApplyPolicy(ctx, pinned); err != nil {
		t.Fatal(err)
	}
	drift := catalogJSON(t, "--state", admin, "--as", "agent:auditor")
	if allowed, _ := allowedTools(t, drift, "tool:ledger"); !slices.Equal(allowed, []string{"history"}) {
		t.Errorf("with balance drifted, the auditor may use %v, want [history]", allowed)
	}
	for _, tl := range drift.Services[0].Tools {
		if tl.Name == "balance" && (tl.PinStatus != "changed" || tl.Pinned != hashes["history"] || tl.Access.Reason != "tool_changed") {
			t.Errorf("drifted balance: %+v %+v", tl, tl.Access)
		}
	}

	// An identity that is not an active node is a clear error, not an
	// empty catalog; a malformed one a usage error.
	if code, _, errOut := run(t, nil, "services", "--state", admin, "--as", "agent:nobody"); code != 1 || !strings.Contains(errOut, "no active node agent:nobody") {
		t.Errorf("--as agent:nobody: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "services", "--state", admin, "--as", "auditor"); code != 2 || !strings.Contains(errOut, "KIND:NAME") {
		t.Errorf("--as auditor: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "services", "--state", admin, "--service", "tool:nope"); code != 1 || !strings.Contains(errOut, "no service tool:nope") {
		t.Errorf("--service tool:nope: exit %d, %q", code, errOut)
	}

	// A model service that has not served yet: listed, not serving, no
	// tools; the auditor may not connect to it.
	if _, err := d.Join(ctx, "llm-internal", "model"); err != nil {
		t.Fatal(err)
	}
	both := catalogJSON(t, "--state", admin, "--as", "agent:auditor")
	if len(both.Services) != 2 || both.Services[0].Service != "model:llm-internal" {
		t.Fatalf("with a model node: %+v", both.Services)
	}
	if m := both.Services[0]; m.Status != "not serving" || len(m.Tools) != 0 || m.PinMode != "" || m.Access == nil || m.Access.Connect {
		t.Errorf("model:llm-internal: %+v access %+v", m, m.Access)
	}
	if one := catalogJSON(t, "--state", admin, "--service", "tool:ledger"); len(one.Services) != 1 || one.Services[0].Service != "tool:ledger" {
		t.Errorf("--service tool:ledger: %+v", one.Services)
	}

	// An agent's own state: its own view, only the services it may
	// connect to and the tools it may call there; it may not ask for
	// another node's. (balance is still drifted.)
	mine := catalogJSON(t, "--state", filepath.Join(d.Dir, "auditor"))
	if len(mine.Services) != 1 {
		t.Errorf("the auditor's own view lists %d services, want only tool:ledger: %+v", len(mine.Services), mine.Services)
	}
	allowed, all := allowedTools(t, mine, "tool:ledger")
	if mine.As != "agent:auditor" || !slices.Equal(allowed, []string{"history"}) || !slices.Equal(all, allowed) {
		t.Errorf("the auditor's own view: as %q, tools %v (allowed %v)", mine.As, all, allowed)
	}
	if code, _, errOut := run(t, nil, "services", "--state", filepath.Join(d.Dir, "auditor"), "--as", "agent:teller"); code != 1 || !strings.Contains(errOut, "only an admin") {
		t.Errorf("an agent asking for another's view: exit %d, %q", code, errOut)
	}
}
