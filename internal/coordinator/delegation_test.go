package coordinator_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/sso/ssotest"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// delegationPolicy lets Alice call both tools of files, Bob only read,
// the agent helper everything, and sub-agents read.
const delegationPolicy = `{
  "grants": [
    {"src": ["user:alice@example.com"], "dst": ["tool:files"], "tools": ["read", "write"]},
    {"src": ["user:bob@example.com"], "dst": ["tool:files"], "tools": ["read"]},
    {"src": ["agent:helper"], "dst": ["tool:files"], "tools": ["*"]},
    {"src": ["agent:sub1", "agent:sub2", "agent:sub3", "agent:sub4"], "dst": ["tool:files"], "tools": ["read"]},
  ],
}`

// delegMesh is a mesh with SSO, two people signed in, agents and a tool
// node whose gateway reported the tools read and write.
type delegMesh struct {
	*mesh
	p            *ssotest.Provider
	alice, bob   *controlclient.Client
	aliceDir     string
	bobDir       string
	agents       map[string]*controlclient.Client
	files        *controlclient.Client
	agentsByName []string
}

func startDelegMesh(t *testing.T, pg bool) *delegMesh {
	t.Helper()
	p := ssotest.Start(t, alice, bob, eve)
	m := &mesh{t: t, data: filepath.Join(t.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(),
		sso:       sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, GroupsClaim: ssotest.GroupsClaim},
		ssoAdmins: []string{"mesh-admins"}}
	if pg {
		key, err := sealed.New([]byte(strings.Repeat("k", sealed.KeySize)))
		if err != nil {
			t.Fatal(err)
		}
		m.database, m.dbKey = pgtest.Shared(t).NewDatabase(t), key
	}
	m.start()
	dm := &delegMesh{mesh: m, p: p, agents: map[string]*controlclient.Client{}}
	var err error
	if dm.aliceDir, _, err = login(t, m, p, "alice"); err != nil {
		t.Fatal(err)
	}
	if dm.bobDir, _, err = login(t, m, p, "bob"); err != nil {
		t.Fatal(err)
	}
	dm.alice, dm.bob = m.client(dm.aliceDir), m.client(dm.bobDir)
	t.Cleanup(func() { dm.alice.Close(); dm.bob.Close() })
	key := m.key(controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
	for _, n := range []string{"helper", "sub1", "sub2", "sub3", "sub4"} {
		c := m.mustJoin(key, n, "")
		t.Cleanup(c.Close)
		dm.agents[n] = c
	}
	dm.files = m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	t.Cleanup(dm.files.Close)
	var tools []controlapi.ReportedTool
	for _, name := range []string{"read", "write"} {
		d, err := toolpin.Parse([]byte(`{"name":"` + name + `","description":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		tools = append(tools, controlapi.ReportedTool{Name: d.Name, Hash: d.Hash, Definition: d.Canonical})
	}
	if err := dm.files.Call(context.Background(), http.MethodPost, controlapi.PathTools, controlapi.ToolReport{Tools: tools}, nil); err != nil {
		t.Fatal(err)
	}
	m.applyPolicy(delegationPolicy)
	return dm
}

func delegate(c *controlclient.Client, req controlapi.DelegationRequest) (controlapi.Delegation, error) {
	var d controlapi.Delegation
	err := c.Call(context.Background(), http.MethodPost, controlapi.PathDelegations, req, &d)
	return d, err
}

func (dm *delegMesh) view(t *testing.T, c *controlclient.Client) *netmap.Netmap {
	t.Helper()
	nm, err := c.Netmap(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	return nm
}

func TestDelegation(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testDelegation(t, startDelegMesh(t, false)) })
	t.Run("postgres", func(t *testing.T) { testDelegation(t, startDelegMesh(t, true)) })
}

func testDelegation(t *testing.T, dm *delegMesh) {
	ctx := context.Background()
	helper := dm.agents["helper"]

	// Alice lets helper read files for an hour.
	root, err := delegate(dm.alice, controlapi.DelegationRequest{To: "agent:helper", TTL: time.Hour, Tools: []string{"files/read"}})
	if err != nil {
		t.Fatalf("alice delegating: %v", err)
	}
	if root.User != "alice@example.com" || root.Grantor != "user:alice@example.com" || root.Agent != "helper" || root.Depth != 1 || root.Token == "" {
		t.Fatalf("issued %+v", root)
	}
	// The token is the CA's, bound to helper's certificate.
	leaf := helper.Certificate().Leaf
	claims, code, err := delegation.Verify(root.Token, delegation.VerifyOptions{Roots: helper.Verifier().Roots(), TrustDomain: "test.mesh",
		Peer: helper.ID(), Incarnation: pki.Incarnation(leaf), Now: dm.clock.Now()})
	if err != nil {
		t.Fatalf("the issued token does not verify for helper: %s %v", code, err)
	}
	if claims.ID() != root.ID || claims.User != "alice@example.com" || !slices.Equal(claims.Tools, []string{"files/read"}) {
		t.Fatalf("claims %+v", claims)
	}
	// helper's netmap carries it; the gateway's revokes nothing.
	if nm := dm.view(t, helper); !slices.Equal(nm.Delegations, []string{root.Token}) {
		t.Fatalf("helper's delegations: %v", nm.Delegations)
	}
	if nm := dm.view(t, dm.agents["sub1"]); len(nm.Delegations) != 0 {
		t.Fatalf("sub1 got delegations it does not hold: %v", nm.Delegations)
	}
	if nm := dm.view(t, dm.files); len(nm.RevokedDelegations)+len(nm.RevokedUsers)+len(nm.Delegations) != 0 {
		t.Fatalf("gateway netmap: %v %v %v", nm.RevokedDelegations, nm.RevokedUsers, nm.Delegations)
	}

	// Refusals, each with its code, each audited.
	refusals := []struct {
		name string
		c    *controlclient.Client
		req  controlapi.DelegationRequest
		want reason.Code
	}{
		{"not an agent", dm.alice, controlapi.DelegationRequest{To: "files", TTL: time.Hour}, reason.KindNotAllowed},
		{"no such node", dm.alice, controlapi.DelegationRequest{To: "agent:nobody", TTL: time.Hour}, reason.NotFound},
		{"ttl too short", dm.alice, controlapi.DelegationRequest{To: "helper", TTL: 30 * time.Second}, reason.BadExpiry},
		{"ttl too long", dm.alice, controlapi.DelegationRequest{To: "helper", TTL: 25 * time.Hour}, reason.BadExpiry},
		{"bob may not write", dm.bob, controlapi.DelegationRequest{To: "helper", TTL: time.Hour, Tools: []string{"files/write"}}, reason.DelegationExceedsGrantor},
		{"bob's glob covers write", dm.bob, controlapi.DelegationRequest{To: "helper", TTL: time.Hour, Tools: []string{"files/*"}}, reason.DelegationExceedsGrantor},
		{"unknown tool", dm.alice, controlapi.DelegationRequest{To: "helper", TTL: time.Hour, Tools: []string{"files/delete"}}, reason.DelegationExceedsGrantor},
		{"unknown service", dm.alice, controlapi.DelegationRequest{To: "helper", TTL: time.Hour, Tools: []string{"mail/send"}}, reason.DelegationExceedsGrantor},
		{"a node without --from", helper, controlapi.DelegationRequest{To: "sub1", TTL: time.Hour}, reason.BadRequest},
		{"sub-delegating another's", dm.agents["sub1"], controlapi.DelegationRequest{To: "sub2", TTL: time.Minute, From: root.ID}, reason.DelegationWrongAgent},
		{"wider than the parent", helper, controlapi.DelegationRequest{To: "sub1", TTL: time.Minute, Tools: []string{"files/write"}, From: root.ID}, reason.DelegationExceedsGrantor},
		{"outliving the parent", helper, controlapi.DelegationRequest{To: "sub1", TTL: 2 * time.Hour, From: root.ID}, reason.DelegationExceedsGrantor},
	}
	for _, r := range refusals {
		if _, err := delegate(r.c, r.req); apiCode(err) != string(r.want) {
			t.Errorf("%s: %v, want %s", r.name, err, r.want)
		}
		waitEvent(t, dm.mesh, func(e audit.Event) bool {
			return e.Action == "delegation.issue" && e.Reason == r.want && e.Decision == audit.Deny
		})
	}
	// Bob may delegate what he may do.
	bobs, err := delegate(dm.bob, controlapi.DelegationRequest{To: "helper", TTL: 2 * time.Hour, Tools: []string{"files/read"}})
	if err != nil {
		t.Fatalf("bob delegating read: %v", err)
	}

	// A chain: helper -> sub1 -> sub2 -> sub3 (depth 4); one more is too deep.
	chain := []controlapi.Delegation{root}
	for i, to := range []string{"sub1", "sub2", "sub3"} {
		from := helper
		if i > 0 {
			from = dm.agents["sub"+string(rune('0'+i))]
		}
		d, err := delegate(from, controlapi.DelegationRequest{To: to, TTL: 30 * time.Minute, From: chain[len(chain)-1].ID})
		if err != nil {
			t.Fatalf("sub-delegating to %s: %v", to, err)
		}
		if d.Depth != i+2 || d.Parent != chain[len(chain)-1].ID || d.User != "alice@example.com" || !slices.Equal(d.Tools, []string{"files/read"}) {
			t.Fatalf("sub-delegation %+v", d)
		}
		chain = append(chain, d)
	}
	if _, err := delegate(dm.agents["sub3"], controlapi.DelegationRequest{To: "sub4", TTL: time.Minute, From: chain[3].ID}); apiCode(err) != string(reason.DelegationTooDeep) {
		t.Fatalf("a fifth link: %v, want %s", err, reason.DelegationTooDeep)
	}
	if nm := dm.view(t, dm.agents["sub3"]); len(nm.Delegations) != 1 {
		t.Fatalf("sub3's delegations: %v", nm.Delegations)
	} else if c, _, err := delegation.Verify(nm.Delegations[0], delegation.VerifyOptions{Roots: helper.Verifier().Roots(), TrustDomain: "test.mesh",
		Peer: dm.agents["sub3"].ID(), Incarnation: pki.Incarnation(dm.agents["sub3"].Certificate().Leaf), Now: dm.clock.Now()}); err != nil || c.Depth() != 4 {
		t.Fatalf("sub3's delegation: %v depth %d", err, c.Depth())
	}

	// Lists: a person's own, everything for an admin.
	list := func(c *controlclient.Client) []string {
		t.Helper()
		var out []controlapi.Delegation
		if err := c.Call(ctx, http.MethodGet, controlapi.PathDelegations, nil, &out); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range out {
			if d.Token != "" {
				t.Fatalf("a list shows a token: %+v", d)
			}
			ids = append(ids, d.ID)
		}
		slices.Sort(ids)
		return ids
	}
	var alices []string
	for _, d := range chain {
		alices = append(alices, d.ID)
	}
	slices.Sort(alices)
	// Bob sees his own; Alice, in an admin group, and the admin see all.
	if got := list(dm.bob); !slices.Equal(got, []string{bobs.ID}) {
		t.Fatalf("bob's list %v", got)
	}
	all := slices.Sorted(slices.Values(append(slices.Clone(alices), bobs.ID)))
	if got := list(dm.alice); !slices.Equal(got, all) {
		t.Fatalf("alice's list %v, want %v", got, all)
	}
	if got := list(dm.admin); !slices.Equal(got, all) {
		t.Fatalf("admin's list %v, want %v", got, all)
	}
	// An agent sees those issued to it or by it.
	if got := list(dm.agents["sub1"]); len(got) != 2 {
		t.Fatalf("sub1's list %v", got)
	}

	// Bob may not revoke Alice's; Alice revokes hers, and the chain made
	// from it goes with it.
	revoke := func(c *controlclient.Client, id string) (controlapi.RevokeResult, error) {
		var res controlapi.RevokeResult
		err := c.Call(ctx, http.MethodPost, controlapi.PathDelegations+"/"+id+"/revoke", nil, &res)
		return res, err
	}
	if _, err := revoke(dm.bob, root.ID); apiCode(err) != string(reason.NotAdmin) {
		t.Fatalf("bob revoking alice's: %v", err)
	}
	res, err := revoke(dm.alice, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(res.Revoked)); !slices.Equal(got, alices) || res.Revoked[0] != root.ID {
		t.Fatalf("revoked %v, want %v (the root first)", res.Revoked, alices)
	}
	if nm := dm.view(t, dm.files); !slices.Equal(nm.RevokedDelegations, alices) {
		t.Fatalf("gateway's revoked delegations %v, want %v", nm.RevokedDelegations, alices)
	}
	if nm := dm.view(t, helper); !slices.Equal(nm.Delegations, []string{bobs.Token}) {
		t.Fatalf("helper's delegations after the revocation: %d", len(nm.Delegations))
	}
	if _, err := delegate(dm.agents["sub1"], controlapi.DelegationRequest{To: "sub4", TTL: time.Minute, From: chain[1].ID}); apiCode(err) != string(reason.DelegationRevoked) {
		t.Fatalf("sub-delegating from a revoked one: %v, want %s", err, reason.DelegationRevoked)
	}
	waitEvent(t, dm.mesh, func(e audit.Event) bool {
		return e.Action == "delegation.revoke" && e.Target == root.ID && e.Decision == audit.Allow && strings.Contains(e.Detail, "revoked 4")
	})
	waitEvent(t, dm.mesh, func(e audit.Event) bool {
		return e.Action == "delegation.revoke" && e.Reason == reason.NotAdmin && e.Src == "spiffe://test.mesh/user/bob@example.com"
	})

	// The admin revokes Bob: his login and his delegation end, and the
	// gateway is told; he cannot sign in again until restored.
	var ur controlapi.RevokeResult
	if err := dm.admin.Call(ctx, http.MethodPost, controlapi.PathUsers+"/"+url.PathEscape("bob@example.com")+"/revoke", nil, &ur); err != nil {
		t.Fatal(err)
	}
	if ur.Logins != 1 || !slices.Equal(ur.Revoked, []string{bobs.ID}) {
		t.Fatalf("revoking bob: %+v", ur)
	}
	if nm := dm.view(t, dm.files); !slices.Equal(nm.RevokedUsers, []string{"bob@example.com"}) || !slices.Contains(nm.RevokedDelegations, bobs.ID) {
		t.Fatalf("gateway's revoked people %v, delegations %v", nm.RevokedUsers, nm.RevokedDelegations)
	}
	if nm := dm.view(t, helper); len(nm.Delegations) != 0 {
		t.Fatalf("helper still holds %d delegations", len(nm.Delegations))
	}
	if _, err := delegate(dm.bob, controlapi.DelegationRequest{To: "helper", TTL: time.Hour}); apiCode(err) != string(reason.UnknownPeer) {
		t.Fatalf("bob's old login delegating: %v, want %s", err, reason.UnknownPeer)
	}
	if _, _, err := login(t, dm.mesh, dm.p, "bob"); apiCode(err) != string(reason.Revoked) {
		t.Fatalf("bob signing in again: %v, want %s", err, reason.Revoked)
	}
	waitEvent(t, dm.mesh, func(e audit.Event) bool {
		return e.Action == "user.revoke" && e.Target == "user:bob@example.com" && e.Decision == audit.Allow
	})
	if err := dm.admin.Call(ctx, http.MethodPost, controlapi.PathUsers+"/bob@example.com/restore", nil, nil); err != nil {
		t.Fatal(err)
	}
	dir, _, err := login(t, dm.mesh, dm.p, "bob")
	if err != nil {
		t.Fatalf("bob signing in once restored: %v", err)
	}
	bob2 := dm.client(dir)
	defer bob2.Close()
	again, err := delegate(bob2, controlapi.DelegationRequest{To: "helper", TTL: time.Hour, Tools: []string{"files/read"}})
	if err != nil {
		t.Fatalf("bob delegating once restored: %v", err)
	}
	if nm := dm.view(t, dm.files); len(nm.RevokedUsers) != 0 || !slices.Contains(nm.RevokedDelegations, bobs.ID) {
		t.Fatalf("after the restore: revoked people %v, delegations %v", nm.RevokedUsers, nm.RevokedDelegations)
	}
	if nm := dm.view(t, helper); !slices.Equal(nm.Delegations, []string{again.Token}) {
		t.Fatalf("helper's delegations after the restore: %d", len(nm.Delegations))
	}
	waitEvent(t, dm.mesh, func(e audit.Event) bool {
		return e.Action == "delegation.issue" && e.Decision == audit.Allow && e.Target == again.ID &&
			e.Src == "spiffe://test.mesh/user/bob@example.com" && strings.Contains(e.Detail, "agent:helper")
	})
}

// Revocations leave the gateways' netmaps once nothing they revoke can
// still be valid, and a delegation leaves its agent's at its expiry.
func TestDelegationRevocationsAgeOut(t *testing.T) {
	dm := startDelegMesh(t, false)
	d, err := delegate(dm.alice, controlapi.DelegationRequest{To: "helper", TTL: 2 * time.Minute, Tools: []string{"files/read"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := delegate(dm.alice, controlapi.DelegationRequest{To: "helper", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := dm.alice.Call(context.Background(), http.MethodPost, controlapi.PathDelegations+"/"+d.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	if nm := dm.view(t, dm.files); !slices.Equal(nm.RevokedDelegations, []string{d.ID}) {
		t.Fatalf("revoked %v", nm.RevokedDelegations)
	}
	if nm := dm.view(t, dm.agents["helper"]); len(nm.Delegations) != 1 {
		t.Fatalf("helper holds %d delegations, want the unrevoked one", len(nm.Delegations))
	}
	dm.clock.Advance(3 * time.Minute)
	if nm := dm.view(t, dm.agents["helper"]); len(nm.Delegations) != 0 {
		t.Fatalf("an expired delegation is still handed out: %d", len(nm.Delegations))
	}
	// The revocation matters until its delegation's expiry and a margin
	// for clock skew; then any change republishes without it.
	dm.clock.Advance(5 * time.Minute)
	if _, err := delegate(dm.alice, controlapi.DelegationRequest{To: "helper", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if nm := dm.view(t, dm.files); len(nm.RevokedDelegations) != 0 {
		t.Fatalf("an aged-out revocation is still listed: %v", nm.RevokedDelegations)
	}
}

// waitEvent polls the trail until an event satisfies match.
func waitEvent(t *testing.T, m *mesh, match func(audit.Event) bool) audit.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range m.auditEvents(t, "kind=admin") {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no such audit event")
		}
		time.Sleep(20 * time.Millisecond) // polling the trail with a deadline
	}
}

// A delegation is pushed to the nodes watching their netmaps, through
// any coordinator on the database, as a node revocation is; and it is
// bound to the agent's registration: the name joined again gets none.
func TestDelegationReachesWatchersThroughEveryCoordinator(t *testing.T) {
	dm := startDelegMesh(t, true)
	other, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(t.TempDir(), "other"), Database: dm.database, DatabaseKey: dm.dbKey,
		Listen: "127.0.0.1:0", TrustDomain: "test.mesh", Now: dm.clock.Now, SSO: dm.sso, SSOAdminGroups: dm.ssoAdmins,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	// The gateway and the agent watch through the other coordinator.
	through := func(c *controlclient.Client) *controlclient.Client {
		d := c.Dir()
		cfg, err := d.Config()
		if err != nil {
			t.Fatal(err)
		}
		cfg.CoordinatorURL = other.URL()
		if err := d.SaveConfig(cfg); err != nil {
			t.Fatal(err)
		}
		nc := dm.client(d.Path())
		t.Cleanup(nc.Close)
		return nc
	}
	files, helper := through(dm.files), through(dm.agents["helper"])
	d, err := delegate(dm.alice, controlapi.DelegationRequest{To: "helper", TTL: time.Hour, Tools: []string{"files/read"}})
	if err != nil {
		t.Fatal(err)
	}
	awaitNetmap(t, helper, func(nm *netmap.Netmap) bool { return slices.Equal(nm.Delegations, []string{d.Token}) })
	if err := dm.alice.Call(context.Background(), http.MethodPost, controlapi.PathDelegations+"/"+d.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	awaitNetmap(t, files, func(nm *netmap.Netmap) bool { return slices.Equal(nm.RevokedDelegations, []string{d.ID}) })
	awaitNetmap(t, helper, func(nm *netmap.Netmap) bool { return len(nm.Delegations) == 0 })

	// Bound to the registration: helper revoked and joined again holds
	// nothing of the old one's.
	d2, err := delegate(dm.alice, controlapi.DelegationRequest{To: "helper", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.admin.Call(context.Background(), http.MethodPost, controlapi.PathNodes+"/helper/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	again := dm.mustJoin(dm.key(controlapi.KeyCreateRequest{Kind: "agent"}), "helper", "")
	defer again.Close()
	if nm := dm.view(t, again); len(nm.Delegations) != 0 {
		t.Fatalf("the new helper holds the old one's delegation %s", d2.ID)
	}
}
