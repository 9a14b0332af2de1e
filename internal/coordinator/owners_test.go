package coordinator_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/sso/ssotest"
)

// A gateway's netmap names the owner of each peer a person joined with
// --sso, as the registry holds it (canonical: Alice signs in as
// Alice@Example.com and is alice@example.com), so that user: selectors
// decide for mesh callers; a node that only reaches a service does not
// learn the service's owner.
func TestGatewaysLearnTheirPeersOwners(t *testing.T) {
	m, p := startSSOMesh(t)
	ctx := context.Background()
	m.applyPolicy(`{
  "node_owners": {"agent": ["user:*"], "tool": ["user:alice@example.com"]},
  "grants": [
    {"src": ["user:alice@example.com"], "dst": ["tool:ledger"], "tools": ["*"]},
    {"src": ["agent:bob-agent"], "dst": ["user:alice@example.com"], "tools": ["read"]},
  ],
}`)
	ssoJoin := func(person, name, kind string) *controlclient.Client {
		t.Helper()
		dir := filepath.Join(t.TempDir(), name)
		err := approving(t, p, person, func(out *ssotest.CodeWriter) error {
			_, err := controlclient.Join(ctx, controlclient.JoinOptions{
				Name: name, Kind: kind, State: dir, Coordinators: []string{m.co.URL()},
				SSO: &controlclient.SSOOptions{CAFingerprint: m.co.CAFingerprint(), ClientSecret: p.Secret, Out: out},
			})
			return err
		})
		if err != nil {
			t.Fatalf("%s joins %s: %v", person, name, err)
		}
		return m.client(dir)
	}
	ssoJoin("alice", "alice-agent", "agent")
	aliceTool := ssoJoin("alice", "alice-tool", "tool")
	bobAgent := ssoJoin("bob", "bob-agent", "agent")
	ledger := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool", Tags: []string{}}), "ledger", "")

	view := func(cl *controlclient.Client) map[identity.Name]netmap.Node {
		t.Helper()
		nm, err := cl.Netmap(ctx, -1)
		if err != nil {
			t.Fatal(err)
		}
		out := map[identity.Name]netmap.Node{}
		for _, n := range nm.Nodes {
			out[n.Name] = n
		}
		return out
	}
	// ledger admits Alice's agent by her user: selector, and knows whose it is.
	lv := view(ledger)
	if n, ok := lv["alice-agent"]; !ok || n.Owner != "alice@example.com" || n.PolicyNode().User != "alice@example.com" {
		t.Fatalf("ledger's entry for alice-agent: %+v, %v", n, ok)
	}
	if _, ok := lv["bob-agent"]; ok {
		t.Fatal("ledger lists bob-agent, whom no grant links to it")
	}
	if lv["ledger"].Owner != "" {
		t.Fatalf("ledger joined with a key has owner %q", lv["ledger"].Owner)
	}
	// A grant whose dst is user:alice reaches the tool she owns: its view
	// lists bob-agent (with his owner) and itself with hers.
	tv := view(aliceTool)
	if tv["bob-agent"].Owner != "bob@example.com" || tv["alice-tool"].Owner != "alice@example.com" {
		t.Fatalf("alice-tool's view: %+v", tv)
	}
	nm, err := aliceTool.Netmap(ctx, -1)
	if err != nil || !slices.Contains(nm.Policy.Grants, 1) {
		t.Fatalf("alice-tool's projection %v, %v: want grant 1 (dst user:alice@example.com)", nm.Policy.Grants, err)
	}
	// bob-agent reaches alice-tool as a service: address, not owner.
	bv := view(bobAgent)
	if n, ok := bv["alice-tool"]; !ok || n.Owner != "" {
		t.Fatalf("bob-agent's entry for the service alice-tool: %+v, %v; want it without its owner", n, ok)
	}
	if bv["bob-agent"].Owner != "bob@example.com" {
		t.Fatalf("bob-agent's own entry: %+v", bv["bob-agent"])
	}
}
