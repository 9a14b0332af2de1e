package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

const needToKnowPolicy = `{
  // SECRET-COMMENT: the incident runbook lives in room 4
  "groups": {"group:fraud": ["agent:fraud", "tag:fraud"], "group:hr": ["agent:hr-bot"]},
  "grants": [
    {"src": ["group:fraud"], "dst": ["tool:payments"], "tools": ["query"]},
    {"src": ["agent:support"], "dst": ["tool:files"], "tools": ["read_file"]},
    {"src": ["group:hr"], "dst": ["model:llm"], "models": ["*"]},
    {"src": ["tag:monitoring"], "dst": ["*"]},
  ],
  "tests": [{"src": "agent:fraud", "dst": "tool:payments", "allow": ["tools/call query"], "deny": ["tools/call SECRET-TEST"]}],
}`

// names lists the node names in nm.
func names(nm *netmap.Netmap) []string {
	var out []string
	for _, n := range nm.Nodes {
		out = append(out, string(n.Name))
	}
	slices.Sort(out)
	return out
}

func TestEachNodeReceivesOnlyWhatItNeeds(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	join := func(kind, name string, tags ...string) *controlclient.Client {
		return m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: kind, Tags: tags}), name, "")
	}
	payments := join("tool", "payments", "tag:pay")
	files := join("tool", "files")
	join("model", "llm")
	fraud := join("agent", "fraud")
	join("agent", "support")
	mon := join("agent", "mon", "tag:monitoring")
	join("agent", "bystander")
	for cl, addr := range map[*controlclient.Client]string{payments: "payments.internal:7800", files: "files.internal:7800"} {
		if err := cl.Register(ctx, []string{addr}); err != nil {
			t.Fatal(err)
		}
	}
	version := m.applyPolicy(needToKnowPolicy)

	view := func(cl *controlclient.Client) (*netmap.Netmap, string) {
		t.Helper()
		nm, err := cl.Netmap(ctx, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(nm)
		return nm, string(b)
	}

	// A gateway: itself and the peers the policy may admit, with what it
	// checks; its own rules, projected; nothing else.
	nm, raw := view(payments)
	if got := names(nm); !slices.Equal(got, []string{"fraud", "mon", "payments"}) {
		t.Errorf("payments sees %v, want fraud, mon and itself", got)
	}
	for _, n := range nm.Nodes {
		if n.Name == "fraud" && (n.Incarnation == "" || n.ID.IsZero() || len(n.Addrs) != 0) {
			t.Errorf("payments' entry for its peer fraud: %+v, want identity and incarnation, no addresses", n)
		}
	}
	if !nm.Policy.Projected() || nm.Policy.Version != version || !slices.Equal(nm.Policy.Grants, []int{0, 3}) {
		t.Errorf("payments' policy: %+v, want the projection of grants 0 and 3 of version %d", nm.Policy, version)
	}
	if nm.CertTTL <= 0 || nm.IssuedAt.IsZero() {
		t.Errorf("payments' view lacks the certificate lifetime or the time it was issued: %v %v", nm.CertTTL, nm.IssuedAt)
	}
	for _, secret := range []string{"SECRET", "files", "llm", "support", "bystander", "group:hr", "hr-bot", "tests"} {
		if strings.Contains(raw, secret) {
			t.Errorf("payments' view mentions %q", secret)
		}
	}

	// An agent: itself and the services it may reach, with addresses; no
	// policy, no tags or incarnations of others.
	nm, raw = view(fraud)
	if got := names(nm); !slices.Equal(got, []string{"fraud", "payments"}) {
		t.Errorf("fraud sees %v, want itself and payments", got)
	}
	for _, n := range nm.Nodes {
		if n.Name == "payments" && (!slices.Equal(n.Addrs, []string{"payments.internal:7800"}) || len(n.Tags) != 0 || n.Incarnation != "") {
			t.Errorf("fraud's entry for payments: %+v, want its address only", n)
		}
	}
	if nm.Policy.Document != "" || nm.Policy.Projected() {
		t.Errorf("an agent received a policy: %+v", nm.Policy)
	}
	for _, secret := range []string{"SECRET", "files", "support", "bystander", "tag:pay", "group:"} {
		if strings.Contains(raw, secret) {
			t.Errorf("fraud's view mentions %q", secret)
		}
	}
	// A grant to every destination reaches every service; one that is not
	// serving (llm never registered) comes without an address, so that a
	// connector can tell "not serving" from "unknown".
	nm, _ = view(mon)
	if !slices.Equal(names(nm), []string{"files", "llm", "mon", "payments"}) {
		t.Errorf("mon sees %v, want files, llm, payments and itself", names(nm))
	}
	if llm, ok := nm.Node("llm"); !ok || len(llm.Addrs) != 0 || llm.Incarnation != "" || len(llm.Tags) != 0 {
		t.Errorf("mon's entry for llm, which is not serving: %+v, want its identity only", llm)
	}
	// The admin uses the admin API; its view holds itself only.
	if nm, _ := view(m.admin); !slices.Equal(names(nm), []string{"admin"}) || nm.Policy.Document != "" {
		t.Errorf("admin's view: %v %+v", names(nm), nm.Policy)
	}
	// The netmap a node gets when it joins is its own view too.
	dir, err := m.join(m.key(controlapi.KeyCreateRequest{Kind: "agent", Tags: []string{"tag:fraud"}}), "new-fraud", "")
	if err != nil {
		t.Fatal(err)
	}
	cached, err := m.client(dir).CachedNetmap()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(cached); !slices.Equal(got, []string{"new-fraud", "payments"}) || cached.Policy.Document != "" {
		t.Errorf("joined with the view %v %+v", got, cached.Policy)
	}
	// A revoked node leaves every view as a peer or a service; a gateway
	// it was linked to keeps its registration as revoked (identity and
	// incarnation only), to refuse its certificate as revoked.
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/fraud/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	nm, _ = view(payments)
	for _, n := range nm.Nodes {
		if n.Name == "fraud" && (n.Status != netmap.StatusRevoked || n.Incarnation == "" || len(n.Tags) != 0 || len(n.Addrs) != 0) {
			t.Errorf("payments' entry for the revoked fraud: %+v, want status revoked, incarnation only", n)
		}
	}
	if !slices.Contains(names(nm), "fraud") {
		t.Errorf("payments lost the revoked fraud's registration: %v", names(nm))
	}
	if nm, _ := view(mon); slices.Contains(names(nm), "fraud") {
		t.Errorf("mon, which is not a gateway, sees the revoked fraud: %v", names(nm))
	}
}

func TestKeyPinnedToANameJoinsOnlyAsThatName(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	key := m.key(controlapi.KeyCreateRequest{Kind: "agent", Reusable: true, Name: "fraud-detector"})
	// The name has grants in the policy: a key holder choosing it would
	// inherit them. A pinned key refuses every other name...
	for _, name := range []string{"fraud", "fraud-detector2", "admin"} {
		if _, err := m.join(key, name, ""); !strings.Contains(fmt.Sprint(err), "name_not_allowed") {
			t.Errorf("pinned key joined as %q: %v, want name_not_allowed", name, err)
		}
	}
	// ...and admits its own, again after a revocation since it is reusable.
	m.mustJoin(key, "fraud-detector", "")
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/fraud-detector/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	m.mustJoin(key, "fraud-detector", "")
	var keys []controlapi.KeyInfo
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathKeys, nil, &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].Name != "fraud-detector" || keys[0].Uses != 2 {
		t.Errorf("key list: %+v, want the pinned name and two uses", keys)
	}
	// A refused attempt is audited with its reason.
	found := false
	for _, e := range m.auditEvents(t, "kind=admin&decision=deny") {
		found = found || e.Action == "node.join" && e.Reason == "name_not_allowed" && e.Target == "fraud"
	}
	if !found {
		t.Error("no audited name_not_allowed refusal")
	}
	for _, bad := range []string{"Fraud", "coordinator", "a b"} {
		var resp controlapi.KeyCreateResponse
		err := m.admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "agent", Name: bad}, &resp)
		if apiCode(err) != "bad_name" {
			t.Errorf("key pinned to %q: %v, want bad_name", bad, err)
		}
	}
}
