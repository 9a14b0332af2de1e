package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/sso/ssotest"
)

// runApproved runs the CLI while the provider approves the code it
// prints, for person; it returns the exit code and both outputs.
func runApproved(t *testing.T, p *ssotest.Provider, person string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out bytes.Buffer
	var code int
	var errw *ssotest.CodeWriter
	p.WhileApproving(t, person, func(w *ssotest.CodeWriter) error {
		errw = w
		code = Run(context.Background(), args, Env{Stdout: &out, Stderr: w, Getenv: func(k string) string { return env[k] }})
		if code != 0 {
			return errors.New("failed") // the caller looks at the code; an approval it never asked for is no failure
		}
		return nil
	})
	return code, out.String(), errw.String()
}

// startSSOCoordinator runs an OpenID provider with alice (in the
// mesh-admins group) and bob, and a coordinator that signs people in
// through it; it returns them, the environment the CLI needs for the
// device flow and the CA fingerprint to pin.
func startSSOCoordinator(t *testing.T) (*ssotest.Provider, *coordinator.Coordinator, map[string]string, string) {
	t.Helper()
	p := ssotest.Start(t,
		ssotest.Person{ID: "alice", Email: "alice@example.com", Groups: []string{"mesh-admins"}},
		ssotest.Person{ID: "bob", Email: "bob@example.com"})
	co, err := coordinator.Start(context.Background(), coordinator.Config{DataDir: filepath.Join(t.TempDir(), "mesh"), Listen: "127.0.0.1:0",
		SSO: sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, GroupsClaim: ssotest.GroupsClaim}, SSOAdminGroups: []string{"mesh-admins"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { co.Close() })
	return p, co, map[string]string{"AGENTMESH_SSO_CLIENT_SECRET": p.Secret}, "sha256:" + co.CAFingerprint()
}

func TestLoginAndJoinSSOThroughTheCLI(t *testing.T) {
	p, co, env, fp := startSSOCoordinator(t)
	login := filepath.Join(t.TempDir(), "alice")
	code, out, errOut := runApproved(t, p, "alice", env, "login", "--coordinator", co.URL(), "--ca-fingerprint", fp, "--state", login)
	if code != 0 || !strings.Contains(out, "logged in as user:alice@example.com") || !strings.Contains(out, "admin:    yes") ||
		!strings.Contains(errOut, "To sign in, open "+p.Issuer) {
		t.Fatalf("login: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, errOut := run(t, nil, "status", "--state", login); code != 0 || !strings.Contains(out, "login:        user:alice@example.com (a person, not a node)") {
		t.Fatalf("status of a login state: %d\n%s\n%s", code, out, errOut)
	}
	// Alice's login state is an admin's: she writes the policy.
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{"node_owners": {"agent": ["user:*"], "tag:payments": ["user:alice@example.com"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, nil, "policy", "apply", "--state", login, pol); code != 0 {
		t.Fatalf("policy apply with alice's login: %d\n%s\n%s", code, out, errOut)
	}
	// Bob may join an agent, not one tagged payments.
	code, _, errOut = runApproved(t, p, "bob", env, "join", "--sso", "--coordinator", co.URL(), "--ca-fingerprint", fp,
		"--name", "bob-pay", "--tags", "tag:payments", "--state", filepath.Join(t.TempDir(), "bob-pay"))
	if code == 0 || !strings.Contains(errOut, "owner_not_allowed") {
		t.Fatalf("bob joining with tag:payments: %d\n%s", code, errOut)
	}
	code, out, errOut = runApproved(t, p, "bob", env, "join", "--sso", "--coordinator", co.URL(), "--ca-fingerprint", fp,
		"--name", "bob-agent", "--state", filepath.Join(t.TempDir(), "bob-agent"))
	if code != 0 || !strings.Contains(out, "joined as spiffe://agentmesh.local/agent/bob-agent") {
		t.Fatalf("bob joining an agent: %d\n%s\n%s", code, out, errOut)
	}
	// Alice joins with her login state: no second sign-in, and her
	// login's groups are hers still.
	code, out, errOut = run(t, nil, "join", "--sso", "--login", login, "--name", "alice-pay", "--tags", "tag:payments",
		"--state", filepath.Join(t.TempDir(), "alice-pay"))
	if code != 0 || !strings.Contains(out, "joined as spiffe://agentmesh.local/agent/alice-pay") {
		t.Fatalf("alice joining with her login state: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, nil, "nodes", "list", "--state", login)
	if code != 0 || !strings.Contains(out, "OWNER") || !strings.Contains(out, "user:bob@example.com") ||
		!strings.Contains(out, "user:alice@example.com") || strings.Contains(out, "bob-pay") {
		t.Fatalf("nodes list: %d\n%s\n%s", code, out, errOut)
	}
	// A grant to Alice reaches the node she joined, by its registered
	// owner, in policy check and who alike; Bob's node it does not.
	if err := os.WriteFile(pol, []byte(`{"node_owners": {"agent": ["user:*"], "tag:payments": ["user:alice@example.com"]},
	  "grants": [{"src": ["user:alice@example.com"], "dst": ["tool:ledger"], "tools": ["write"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run(t, nil, "policy", "apply", "--state", login, pol); code != 0 {
		t.Fatalf("policy apply with a user: grant: %d\n%s\n%s", code, out, errOut)
	}
	for src, want := range map[string]string{"agent:alice-pay": "ALLOW", "agent:bob-agent": "DENY"} {
		code, out, errOut := run(t, nil, "policy", "check", "--state", login, "--src", src, "--dst", "tool:ledger", "--tool", "write")
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Fatalf("policy check %s: %d\n%s\n%s", src, code, out, errOut)
		}
	}
	code, out, errOut = run(t, nil, "policy", "who", "--state", login, "--dst", "tool:ledger")
	if code != 0 || !strings.Contains(out, "agent:alice-pay (user:alice@example.com)") || strings.Contains(out, "bob-agent") {
		t.Fatalf("policy who: %d\n%s\n%s", code, out, errOut)
	}
}
