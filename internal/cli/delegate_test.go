package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/controlapi"
)

// A person delegates to their agent, the agent's connector finds the
// delegation (and refuses to start for a person who gave none), and the
// delegation and the person are revoked, all through the CLI.
func TestDelegateThroughTheCLI(t *testing.T) {
	p, co, env, fp := startSSOCoordinator(t)
	alice, bob := filepath.Join(t.TempDir(), "alice"), filepath.Join(t.TempDir(), "bob")
	for person, dir := range map[string]string{"alice": alice, "bob": bob} {
		if code, out, errOut := runApproved(t, p, person, env, "login", "--coordinator", co.URL(), "--ca-fingerprint", fp, "--state", dir); code != 0 {
			t.Fatalf("login %s: %d\n%s\n%s", person, code, out, errOut)
		}
	}
	helper := filepath.Join(t.TempDir(), "helper")
	key := mustRun(t, "keys", "create", "--kind", "agent", "--state", co.AdminDir())
	mustRun(t, "join", "--authkey", strings.TrimSpace(key), "--name", "helper", "--state", helper)

	if code, _, errOut := run(t, nil, "delegate", "--to", "helper", "--ttl", "1h", "--state", alice); code != 2 || !strings.Contains(errOut, "--to agent:NAME") {
		t.Fatalf("delegate --to without agent: %d\n%s", code, errOut)
	}
	id := strings.TrimSpace(mustRun(t, "delegate", "--to", "agent:helper", "--ttl", "1h", "--state", alice))
	if len(id) != 32 {
		t.Fatalf("delegate printed %q, want the delegation's ID", id)
	}
	var ds []controlapi.Delegation
	if err := json.Unmarshal([]byte(mustRun(t, "delegate", "list", "--json", "--state", alice)), &ds); err != nil || len(ds) != 1 || ds[0].ID != id || ds[0].Agent != "helper" {
		t.Fatalf("delegate list: %+v %v", ds, err)
	}
	// The agent acts for Alice: connect finds her delegation in its
	// netmap and serves (stdio, which ends at once: no input).
	if code, out, errOut := run(t, nil, "connect", "files", "--state", helper, "--on-behalf-of", "alice@example.com"); code != 0 {
		t.Fatalf("connect on behalf of alice: %d\n%s\n%s", code, out, errOut)
	}
	// Bob gave it nothing: connect says how to get a delegation.
	if code, _, errOut := run(t, nil, "connect", "files", "--state", helper, "--on-behalf-of", "bob@example.com"); code == 0 || !strings.Contains(errOut, "agentmesh delegate --to agent:helper") {
		t.Fatalf("connect on behalf of bob: %d\n%s", code, errOut)
	}
	if out := mustRun(t, "delegate", "revoke", id, "--state", alice); !strings.Contains(out, "revoked 1 delegation(s): "+id) {
		t.Fatalf("delegate revoke: %s", out)
	}
	if code, _, errOut := run(t, nil, "connect", "files", "--state", helper, "--on-behalf-of", "alice@example.com"); code == 0 || !strings.Contains(errOut, "no live delegation") {
		t.Fatalf("connect with the delegation revoked: %d\n%s", code, errOut)
	}
	if out := mustRun(t, "users", "revoke", "bob@example.com", "--state", alice); !strings.Contains(out, "revoked user:bob@example.com: 1 login(s) ended") {
		t.Fatalf("users revoke: %s", out)
	}
	if code, _, errOut := run(t, nil, "delegate", "--to", "agent:helper", "--ttl", "1h", "--state", bob); code == 0 || !strings.Contains(errOut, "unknown_peer") {
		t.Fatalf("a revoked person delegating: %d\n%s", code, errOut)
	}
	if out := mustRun(t, "users", "restore", "bob@example.com", "--state", alice); !strings.Contains(out, "restored user:bob@example.com") {
		t.Fatalf("users restore: %s", out)
	}
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := run(t, nil, args...)
	if code != 0 {
		t.Fatalf("agentmesh %s: %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}
