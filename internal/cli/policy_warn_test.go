package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyApplyAndValidateWarnAboutSelectorsThatMatchNoNode(t *testing.T) {
	d, _ := startTestMesh(t)
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	file := filepath.Join(t.TempDir(), "typo.hujson")
	// "tellr" and tag:prd are typos: no such agent, no node with that tag.
	if err := os.WriteFile(file, []byte(`{"grants": [
  {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance"]},
  {"src": ["agent:tellr"], "dst": ["tag:prd"], "tools": ["*"]},
  {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance"]},
]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	wantWarnings := func(what, errOut string) {
		t.Helper()
		for _, w := range []string{"warning: agent:tellr matches no node", "warning: tag:prd matches no node (no node carries it), in grants[1] (line 3) dst"} {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", what, w, errOut)
			}
		}
		if strings.Contains(errOut, "agent:teller ") || strings.Contains(errOut, "tool:ledger") {
			t.Errorf("%s warns about a selector that matches:\n%s", what, errOut)
		}
	}

	// validate is offline unless --state is given on the command line.
	// Offline it still lints: grants[2] repeats grants[0].
	lint := "warning: " + file + ":4:3: grants[2]: shadowed: earlier grants (0)"
	if code, out, errOut := run(t, env, "policy", "validate", file); code != 0 || strings.Contains(errOut, "matches no node") || !strings.Contains(errOut, lint) || !strings.Contains(out, "valid") {
		t.Fatalf("offline validate: %d %q %q", code, out, errOut)
	}
	code, out, errOut := run(t, nil, "policy", "validate", file, "--state", d.Coordinator.AdminDir())
	if code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("validate --state: %d %q %q", code, out, errOut)
	}
	wantWarnings("validate --state", errOut)
	if code, _, errOut := run(t, nil, "policy", "validate", file, "--state", d.Coordinator.AdminDir(), "--strict"); code != 1 || !strings.Contains(errOut, "--strict: 2 selector(s)") {
		t.Errorf("validate --strict: %d %q", code, errOut)
	}
	if code, _, errOut := run(t, nil, "policy", "validate", file, "--strict"); code != 2 || !strings.Contains(errOut, "--strict needs --state") {
		t.Errorf("validate --strict without --state: %d %q", code, errOut)
	}

	// apply --strict refuses and applies nothing; apply warns and applies.
	if code, _, errOut := run(t, env, "policy", "apply", file, "--strict"); code != 1 || !strings.Contains(errOut, "nothing was applied") {
		t.Fatalf("apply --strict: %d %q", code, errOut)
	}
	if _, out, _ := run(t, env, "policy", "history", "--json"); strings.Count(out, `"version"`) != 1 {
		t.Fatalf("apply --strict applied a version: %s", out)
	}
	code, out, errOut = run(t, env, "policy", "apply", file)
	if code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("apply: %d %q %q", code, out, errOut)
	}
	wantWarnings("apply", errOut)
	// apply lints as validate does: it is where a mistake starts to count.
	if !strings.Contains(errOut, lint) {
		t.Errorf("apply: stderr lacks the lint warning %q:\n%s", lint, errOut)
	}
}
