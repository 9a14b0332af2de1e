package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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

// delegationPolicy: what each person may do themselves, and what the
// assistants may do for people. A delegation never gives more than both:
// the assistants may echo for anyone, and sum or run the long operation
// only for Alice, though Bob may sum himself.
const delegationPolicy = `{
  "grants": [
    {"src": ["user:alice@example.com"], "dst": ["tool:everything"], "tools": ["echo", "get-sum", "trigger-long-running-operation"]},
    {"src": ["user:bob@example.com"], "dst": ["tool:everything"], "tools": ["echo", "get-sum"]},
    {"src": ["tag:assistants"], "dst": ["tool:everything"], "tools": ["echo"], "on_behalf_of": ["*"]},
    {"src": ["tag:assistants"], "dst": ["tool:everything"], "tools": ["get-sum", "trigger-long-running-operation"],
     "on_behalf_of": ["user:alice@example.com"]},
  ],
}`

// rawEvent is an audit event as `agentmesh audit --json` prints it, with
// the fields delegation adds.
type rawEvent struct {
	event
	User       string `json:"user"`
	OnBehalfOf *struct {
		User       string   `json:"user"`
		Chain      []string `json:"chain"`
		Delegation string   `json:"delegation"`
	} `json:"on_behalf_of"`
}

// followAudit waits until an event matching match reaches the coordinator
// and returns it.
func (m *mesh) followAudit(what string, match func(rawEvent) bool) rawEvent {
	m.t.Helper()
	f := startProc(m.t, "audit --follow", []string{agentmeshBin, "audit", "--follow", "--limit", "0", "--json", "--state", m.admin}, m.env())
	defer f.stop(m.t)
	var got rawEvent
	if _, err := f.waitLine(f.stdout, auditTimeout, func(l string) bool {
		var e rawEvent
		if json.Unmarshal([]byte(l), &e) == nil && match(e) {
			got = e
			return true
		}
		return false
	}); err != nil {
		m.t.Fatalf("no audit event %s reached the coordinator: %v", what, err)
	}
	return got
}

// TestDelegationEndToEnd is issue 22's "done when": people sign in through
// a real OpenID Connect provider, each delegates to an agent, the policy
// lets Alice's agent call a tool Bob's may not, the trail names both the
// agent and the person, and revoking Alice's delegation cuts a call in
// flight on her agent's open session.
func TestDelegationEndToEnd(t *testing.T) {
	m, p := newPeopleMesh(t)
	everything := m.join("tool", "everything", "")
	aliceAgent := m.join("agent", "alice-assistant", "tag:assistants")
	bobAgent := m.join("agent", "bob-assistant", "tag:assistants")
	m.applyPolicy(delegationPolicy)
	m.serve("everything", everything, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")
	aliceLogin, bobLogin := m.login(p, "alice"), m.login(p, "bob")

	// Without a delegation an assistant has no grant of its own.
	own := runClientMayFail(t, stdioClient("everything", bobAgent, step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": "mine"}}))
	if own.ConnectError == nil && own.Results[0].Error == nil {
		t.Fatalf("an assistant without a delegation called echo: %s", own.Raw)
	}

	aliceDel := strings.TrimSpace(m.must("delegate", "--to", "agent:alice-assistant", "--ttl", "1h", "--state", aliceLogin))
	bobDel := strings.TrimSpace(m.must("delegate", "--to", "agent:bob-assistant", "--ttl", "1h", "--state", bobLogin))
	// Bob cannot hand out what he may not do himself.
	if _, errOut, code := m.run("delegate", "--to", "agent:bob-assistant", "--ttl", "1h", "--tools", "everything/trigger-long-running-operation", "--state", bobLogin); code == 0 || !strings.Contains(errOut, "delegation_exceeds_grantor") {
		t.Fatalf("bob delegating a tool he may not call: exit %d\n%s", code, errOut)
	}

	onBehalf := func(state, person string, steps ...step) clientSpec {
		spec := stdioClient("everything", state, steps...)
		spec.Args = append(spec.Args, "--on-behalf-of", person)
		return spec
	}
	sum := step{Op: "callTool", Name: "get-sum", Arguments: map[string]any{"a": 2, "b": 40}}
	echo := step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": "for a person"}}
	alice := runClient(t, onBehalf(aliceAgent, "alice@example.com", sum, echo))
	if got := texts(t, alice.Results[0]); !strings.Contains(got, "42") {
		t.Fatalf("alice's assistant summing: %q", got)
	}
	bob := runClient(t, onBehalf(bobAgent, "bob@example.com", echo, sum))
	if got := texts(t, bob.Results[0]); !strings.Contains(got, "for a person") {
		t.Fatalf("bob's assistant echoing: %q", got)
	}
	denied := policyDenial(t, bob.Results[1], "not_granted")

	// The trail names the agent (src) and the person it acted for.
	meshPrefix := "spiffe://agentmesh.local/agent/"
	allowed := m.followAudit("of alice's assistant summing", func(e rawEvent) bool {
		return e.Tool == "get-sum" && e.Decision == "allow" && e.Src == meshPrefix+"alice-assistant"
	})
	if o := allowed.OnBehalfOf; o == nil || o.User != "alice@example.com" || o.Delegation != aliceDel ||
		strings.Join(o.Chain, " ") != "user:alice@example.com "+meshPrefix+"alice-assistant" {
		t.Errorf("alice's call audited with on_behalf_of %+v, want alice, her delegation %s and the chain", allowed.OnBehalfOf, aliceDel)
	}
	refused := m.followAudit("of bob's assistant refused", func(e rawEvent) bool { return e.ID == denied })
	if o := refused.OnBehalfOf; refused.Src != meshPrefix+"bob-assistant" || refused.Decision != "deny" || o == nil || o.User != "bob@example.com" || o.Delegation != bobDel {
		t.Errorf("bob's refused call audited as %+v with on_behalf_of %+v", refused.event, refused.OnBehalfOf)
	}

	// A long call in flight on Alice's agent's session; revoking her
	// delegation cuts it (the operation would take a minute).
	long := onBehalf(aliceAgent, "alice@example.com", step{Op: "callTool", Name: "trigger-long-running-operation",
		Arguments: map[string]any{"duration": 60, "steps": 60}, Progress: true, TimeoutMs: 120000})
	client, wait := startClient(t, long)
	// Its first progress notification: the call is running at the server.
	if _, err := client.waitLine(client.stderr, startTimeout, func(l string) bool { return strings.HasPrefix(l, "client.mjs: progress") }); err != nil {
		t.Fatalf("the long call made no progress: %v", err)
	}
	m.must("delegate", "revoke", aliceDel, "--state", aliceLogin)
	res := wait()
	if res.ConnectError != nil {
		t.Fatalf("the long call's client: %+v", res.ConnectError)
	}
	// The client is told why: the gateway's error for the call, naming
	// the revocation and the event that recorded the cut, passed on by
	// the connector (not a stream that ended, taken for an unreachable
	// gateway).
	r := res.Results[0]
	if r.Error == nil || r.Error.Data.Reason != "delegation_revoked" || r.Error.Data.EventID == "" {
		t.Fatalf("the call in flight was not told of the revocation: %s", res.Raw)
	}
	cut := m.followAudit("of the session cut", func(e rawEvent) bool {
		return e.ID == r.Error.Data.EventID
	})
	if cut.Reason != "delegation_revoked" || cut.Src != meshPrefix+"alice-assistant" || cut.OnBehalfOf == nil || cut.OnBehalfOf.Delegation != aliceDel {
		t.Errorf("the cut is audited as %+v with on_behalf_of %+v", cut.event, cut.OnBehalfOf)
	}
	// And the agent can no longer act for Alice at all.
	after := runClientMayFail(t, onBehalf(aliceAgent, "alice@example.com", echo))
	if after.ConnectError == nil && after.Results[0].Error == nil {
		t.Fatalf("alice's assistant still acts for her after the revocation: %s", after.Raw)
	}
	m.verifyAudit()
}
