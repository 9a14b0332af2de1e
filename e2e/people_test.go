package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/sso/ssotest"
)

// People sign in through a real OpenID Connect provider (zitadel's, in this
// test process: ssotest) with the device flow, as `agentmesh login` and
// `agentmesh join --sso` do on a headless machine.

var (
	alice = ssotest.Person{ID: "alice", Email: "alice@example.com", Groups: []string{"mesh-admins"}}
	bob   = ssotest.Person{ID: "bob", Email: "bob@example.com", Groups: []string{"dev"}}
)

// newPeopleMesh starts a provider with alice and bob and a coordinator
// that signs people in through it.
func newPeopleMesh(t *testing.T) (*mesh, *ssotest.Provider) {
	t.Helper()
	requireE2E(t)
	p := ssotest.Start(t, alice, bob)
	m := newMeshArgs(t, func(string) []string {
		return []string{"--sso-issuer", p.Issuer, "--sso-client-id", p.ClientID, "--sso-groups-claim", ssotest.GroupsClaim,
			"--sso-admin-group", "mesh-admins"}
	})
	return m, p
}

// signIn runs one agentmesh command that signs a person in (login, join
// --sso) while the provider approves the code it prints for person, as
// their browser would; it returns stdout and stderr and fails the test
// unless the command succeeds.
func (m *mesh) signIn(p *ssotest.Provider, person string, args ...string) (string, string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentmeshBin, args...)
	cmd.Env = append(m.env(), "AGENTMESH_SSO_CLIENT_SECRET="+p.Secret)
	var out bytes.Buffer
	errw := ssotest.NewCodeWriter()
	cmd.Stdout, cmd.Stderr = &out, errw
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	approved := make(chan error, 1)
	go func() { approved <- p.ApproveWhenPrinted(ctx, errw, person) }()
	err := cmd.Wait()
	cancel() // an approval still waiting for a code ends here
	if aerr := <-approved; err == nil && aerr != nil {
		m.t.Fatalf("approving %s's sign-in: %v", person, aerr)
	}
	if err != nil {
		m.t.Fatalf("agentmesh %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errw.String())
	}
	return out.String(), errw.String()
}

// login signs person in with `agentmesh login` and returns their login
// state directory.
func (m *mesh) login(p *ssotest.Provider, person string) string {
	m.t.Helper()
	state := filepath.Join(m.dir, person+"-login")
	fp := caFingerprint(m.t, m.admin)
	out, errOut := m.signIn(p, person, "login", "--coordinator", "https://"+m.coordAddr, "--ca-fingerprint", fp, "--state", state)
	if !strings.Contains(out, "logged in as user:"+person+"@example.com") || !strings.Contains(errOut, p.Issuer) {
		m.t.Fatalf("login of %s printed:\n%s\n%s", person, out, errOut)
	}
	return state
}

// caFingerprint is the mesh CA's fingerprint, as the coordinator prints
// it at start, read from a node's state.
func caFingerprint(t *testing.T, state string) string {
	t.Helper()
	dir, err := nodestate.Open(state)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := dir.CABundle()
	if err != nil || len(roots) == 0 {
		t.Fatalf("CA bundle of %s: %v", state, err)
	}
	return "sha256:" + pki.Fingerprint(roots[0])
}

// TestPeopleSignInAndJoinThroughTheBinary: a person signs in by the device
// flow and joins a node as its owner, with the real binary against a real
// OpenID Connect provider; the trail names them.
func TestPeopleSignInAndJoinThroughTheBinary(t *testing.T) {
	m, p := newPeopleMesh(t)
	m.applyPolicy(`{"node_owners": {"agent": ["user:*"]}}`)
	aliceLogin := m.login(p, "alice")
	out := m.must("status", "--state", aliceLogin)
	if !strings.Contains(out, "user:alice@example.com") {
		t.Fatalf("status of alice's login:\n%s", out)
	}
	// Bob joins a node with a fresh sign-in; alice with her login state.
	fp := caFingerprint(t, m.admin)
	out, _ = m.signIn(p, "bob", "join", "--sso", "--coordinator", "https://"+m.coordAddr, "--ca-fingerprint", fp,
		"--name", "bob-agent", "--state", filepath.Join(m.dir, "bob-agent"))
	if !strings.Contains(out, "joined as spiffe://") {
		t.Fatalf("bob's join:\n%s", out)
	}
	m.must("join", "--sso", "--login", aliceLogin, "--name", "alice-agent", "--state", filepath.Join(m.dir, "alice-agent"))
	nodes := m.must("nodes", "list", "--state", m.admin, "--json")
	for _, want := range []string{`"owner": "bob@example.com"`, `"owner": "alice@example.com"`} {
		if !strings.Contains(nodes, want) {
			t.Errorf("nodes lacks %s:\n%s", want, nodes)
		}
	}
}
