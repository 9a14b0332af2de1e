package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/sso/ssotest"
)

var (
	alice = ssotest.Person{ID: "alice", Email: "Alice@Example.com", Groups: []string{"mesh-admins", "payments"}}
	bob   = ssotest.Person{ID: "bob", Email: "bob@example.com", Groups: []string{"dev"}}
	eve   = ssotest.Person{ID: "eve", Email: "eve@example.com", Unverified: true}
)

// startSSOMesh runs a provider and a coordinator configured with it.
func startSSOMesh(t *testing.T) (*mesh, *ssotest.Provider) {
	t.Helper()
	p := ssotest.Start(t, alice, bob, eve)
	m := &mesh{t: t, data: filepath.Join(t.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(),
		sso:       sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, GroupsClaim: ssotest.GroupsClaim},
		ssoAdmins: []string{"mesh-admins"}}
	m.start()
	return m, p
}

func approving(t *testing.T, p *ssotest.Provider, person string, f func(out *ssotest.CodeWriter) error) error {
	t.Helper()
	return p.WhileApproving(t, person, f)
}

// deviceToken gets an ID token by the device flow, for clientID.
func deviceToken(t *testing.T, p *ssotest.Provider, clientID, person string) string {
	t.Helper()
	var tok string
	err := approving(t, p, person, func(out *ssotest.CodeWriter) error {
		var err error
		tok, err = sso.DeviceLogin(context.Background(), sso.DeviceOptions{Issuer: p.Issuer, ClientID: clientID, ClientSecret: p.Secret, Out: out})
		return err
	})
	if err != nil {
		t.Fatalf("device flow: %v", err)
	}
	return tok
}

func login(t *testing.T, m *mesh, p *ssotest.Provider, person string) (string, controlclient.LoginResult, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), person+"-login")
	var res controlclient.LoginResult
	err := approving(t, p, person, func(out *ssotest.CodeWriter) error {
		var err error
		res, err = controlclient.Login(context.Background(), controlclient.LoginOptions{
			SSOOptions:   controlclient.SSOOptions{CAFingerprint: "sha256:" + m.co.CAFingerprint(), ClientSecret: p.Secret, Out: out},
			Coordinators: []string{m.co.URL()}, State: dir,
		})
		return err
	})
	return dir, res, err
}

func TestSSOLoginByDeviceFlowGivesAUserIdentityAndAdminByGroup(t *testing.T) {
	m, p := startSSOMesh(t)
	dir, res, err := login(t, m, p, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if res.User.String() != "spiffe://test.mesh/user/alice@example.com" || !res.Admin || !slices.Equal(res.Groups, []string{"mesh-admins", "payments"}) {
		t.Fatalf("login: %+v", res)
	}
	d, _ := nodestate.Open(dir)
	if cfg, err := d.Config(); err != nil || cfg.Kind != "user" || cfg.Name != "alice@example.com" {
		t.Fatalf("login state config %+v, %v", cfg, err)
	}
	// Alice's group makes her an admin: her login state runs admin calls.
	ac := m.client(dir)
	var nodes []controlapi.NodeInfo
	if err := ac.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatalf("nodes list with an admin group's login: %v", err)
	}
	var kr controlapi.KeyCreateResponse
	if err := ac.Call(context.Background(), http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "agent", Tags: []string{}}, &kr); err != nil {
		t.Fatal(err)
	}
	if kr.Info.CreatedBy != "spiffe://test.mesh/user/alice@example.com" {
		t.Fatalf("key created by %q, want alice's user ID", kr.Info.CreatedBy)
	}
	// Bob signs in too, but is in no admin group.
	bdir, bres, err := login(t, m, p, "bob")
	if err != nil || bres.Admin {
		t.Fatalf("bob: %+v %v", bres, err)
	}
	bc := m.client(bdir)
	err = bc.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes)
	if apiCode(err) != string(reason.NotAdmin) {
		t.Fatalf("bob's admin call: %v, want %s", err, reason.NotAdmin)
	}
	// A person's certificate is no node's: the node API refuses it.
	err = ac.Call(context.Background(), http.MethodGet, controlapi.PathNetmap+"?since=-1", nil, nil)
	if err == nil {
		t.Fatal("a user certificate was accepted on the node API")
	}
	found := false
	for _, e := range m.auditEvents(t, "action=user.login") {
		if e.Src == "spiffe://test.mesh/user/alice@example.com" && e.Decision == audit.Allow {
			found = true
		}
	}
	if !found {
		t.Fatal("no audited user.login for alice")
	}
}

func TestSSOJoinRecordsOwnerAndNodeOwnersRefuses(t *testing.T) {
	m, p := startSSOMesh(t)
	m.applyPolicy(`{
  "node_owners": {
    "agent": ["user:*"],
    "tag:payments": ["sso:payments"],
  },
}`)
	join := func(person, name string, tags ...string) error {
		return approving(t, p, person, func(out *ssotest.CodeWriter) error {
			_, err := controlclient.Join(context.Background(), controlclient.JoinOptions{
				Name: name, State: filepath.Join(t.TempDir(), name), Coordinators: []string{m.co.URL()}, Tags: tags,
				SSO: &controlclient.SSOOptions{CAFingerprint: m.co.CAFingerprint(), ClientSecret: p.Secret, Out: out},
			})
			return err
		})
	}
	if err := join("bob", "bob-pay", "tag:payments"); apiCode(err) != string(reason.OwnerNotAllowed) {
		t.Fatalf("bob joining with tag:payments: %v, want %s", err, reason.OwnerNotAllowed)
	}
	if err := join("alice", "alice-pay", "tag:payments"); err != nil {
		t.Fatalf("alice joining with tag:payments: %v", err)
	}
	if err := join("bob", "bob-agent"); err != nil {
		t.Fatalf("bob joining an untagged agent: %v", err)
	}
	// With a login state instead of an ID token: the same rules, the
	// groups of the login.
	bobLogin, _, err := login(t, m, p, "bob")
	if err != nil {
		t.Fatal(err)
	}
	withLogin := func(dir, name string, tags ...string) error {
		_, err := controlclient.Join(context.Background(), controlclient.JoinOptions{
			Name: name, State: filepath.Join(t.TempDir(), name), Tags: tags, SSO: &controlclient.SSOOptions{Login: dir}})
		return err
	}
	if err := withLogin(bobLogin, "bob-pay2", "tag:payments"); apiCode(err) != string(reason.OwnerNotAllowed) {
		t.Fatalf("bob's login state joining with tag:payments: %v, want %s", err, reason.OwnerNotAllowed)
	}
	if err := withLogin(bobLogin, "bob-agent2"); err != nil {
		t.Fatalf("bob's login state joining an agent: %v", err)
	}
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	owners := map[string]string{}
	for _, n := range nodes {
		owners[n.Name] = n.Owner
	}
	if owners["alice-pay"] != "alice@example.com" || owners["bob-agent"] != "bob@example.com" || owners["bob-agent2"] != "bob@example.com" || owners["admin"] != "" {
		t.Fatalf("owners %v", owners)
	}
	if _, ok := owners["bob-pay"]; ok {
		t.Fatal("the refused join left a node")
	}
	waitAudit(t, m, "reason="+string(reason.OwnerNotAllowed))
}

// waitAudit polls the trail until an event matches query.
func waitAudit(t *testing.T, m *mesh, query string) audit.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if evs := m.auditEvents(t, query); len(evs) > 0 {
			return evs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event for %s", query)
		}
		time.Sleep(20 * time.Millisecond) // polling the trail with a deadline
	}
}

func TestSSORefusesBadTokensEachWithItsReason(t *testing.T) {
	m, p := startSSOMesh(t)
	other := ssotest.Start(t, alice)
	post := func(tok string) string {
		t.Helper()
		key, _ := pki.NewKey()
		csr, _ := pki.CreateCSR(key)
		body, _ := json.Marshal(controlapi.LoginRequest{IDToken: tok, CSR: string(pki.EncodeCSRPEM(csr))})
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.PinnedClientTLSAt(m.co.CAFingerprint(), m.clock.Now)}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Post(m.co.URL()+controlapi.PathLogin, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Code string `json:"code"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode == http.StatusOK {
			return "ok"
		}
		return e.Code
	}
	good := deviceToken(t, p, p.ClientID, "alice")
	cases := []struct {
		name, tok string
		want      reason.Code
	}{
		{"foreign issuer", deviceToken(t, other, other.ClientID, "alice"), reason.SSOForeignIssuer},
		{"wrong audience", deviceToken(t, p, p.OtherClientID, "alice"), reason.SSOWrongAudience},
		{"unverified e-mail", deviceToken(t, p, p.ClientID, "eve"), reason.SSONoEmail},
		{"not a token", "not-a-token", reason.SSOBadToken},
		{"bad signature", tamper(good), reason.SSOBadToken},
	}
	if got := post(good); got != "ok" {
		t.Fatalf("a good token: %s", got)
	}
	// A token signs in once.
	if got := post(good); got != string(reason.SSOTokenUsed) {
		t.Fatalf("the good token again: %s, want %s", got, reason.SSOTokenUsed)
	}
	waitAudit(t, m, "reason="+string(reason.SSOTokenUsed))
	for _, c := range cases {
		if got := post(c.tok); got != string(c.want) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
		waitAudit(t, m, "reason="+string(c.want))
	}
	// The same good token, once the coordinator's clock is past its
	// expiry and the allowed skew.
	// (A restart renews the coordinator's own certificates at that time.)
	m.clock.Advance(time.Hour + sso.DefaultSkew + time.Minute)
	m.stop()
	m.start()
	if got := post(good); got != string(reason.SSOExpired) {
		t.Errorf("expired: %s, want %s", got, reason.SSOExpired)
	}
	ev := waitAudit(t, m, "reason="+string(reason.SSOExpired))
	if ev.Action != "user.login" || ev.Decision != audit.Deny {
		t.Errorf("expired refusal audited as %+v", ev)
	}
}

// tamper changes the token's payload, keeping its signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	b := []byte(parts[1])
	if b[5] == 'A' {
		b[5] = 'B'
	} else {
		b[5] = 'A'
	}
	return parts[0] + "." + string(b) + "." + parts[2]
}

func TestSSOStartFailsClearlyWhenDiscoveryFails(t *testing.T) {
	p := ssotest.Start(t)
	_, err := coordinator.Start(context.Background(), coordinator.Config{DataDir: filepath.Join(t.TempDir(), "mesh"), Listen: "127.0.0.1:0",
		SSO: sso.Config{Issuer: p.Issuer + "/wrong", ClientID: p.ClientID}})
	if err == nil || !strings.Contains(err.Error(), "discovery") || !strings.Contains(err.Error(), "--sso-issuer") {
		t.Fatalf("start with a wrong issuer: %v", err)
	}
}

// TestSSOTokenSignsInAgainOnlyForTheSameRequest: a client whose answer was
// lost retries with the token it has; the same request (same key, and for
// a join the same name, kind and tags) is answered again, the same node
// keeps its incarnation, and the token does not sign in anything else.
func TestSSOTokenSignsInAgainOnlyForTheSameRequest(t *testing.T) {
	m, p := startSSOMesh(t)
	m.applyPolicy(`{"node_owners": {"agent": ["user:*"]}}`)
	post := func(path string, req any) (string, string) { return signInPost(t, m, path, req) }
	csrOf := func() string { return newCSR(t) }

	tok, csr := deviceToken(t, p, p.ClientID, "bob"), csrOf()
	if got, _ := post(controlapi.PathLogin, controlapi.LoginRequest{IDToken: tok, CSR: csr}); got != "ok" {
		t.Fatalf("login: %s", got)
	}
	if got, _ := post(controlapi.PathLogin, controlapi.LoginRequest{IDToken: tok, CSR: csr}); got != "ok" {
		t.Fatalf("the same login again: %s", got)
	}
	if got, _ := post(controlapi.PathLogin, controlapi.LoginRequest{IDToken: tok, CSR: csrOf()}); got != string(reason.SSOTokenUsed) {
		t.Fatalf("the token with another key: %s, want %s", got, reason.SSOTokenUsed)
	}

	tok, csr = deviceToken(t, p, p.ClientID, "bob"), csrOf()
	join := controlapi.JoinRequest{Name: "bob-agent", IDToken: tok, CSR: csr}
	got, inc := post(controlapi.PathJoin, join)
	if got != "ok" {
		t.Fatalf("join: %s", got)
	}
	got, again := post(controlapi.PathJoin, join)
	if got != "ok" || again != inc {
		t.Fatalf("the same join again: %s, incarnation %q, want %q", got, again, inc)
	}
	for name, req := range map[string]controlapi.JoinRequest{
		"another name": {Name: "bob-other", IDToken: tok, CSR: csr},
		"another key":  {Name: "bob-agent", IDToken: tok, CSR: csrOf()},
		"tags added":   {Name: "bob-agent", IDToken: tok, CSR: csr, Tags: []string{"tag:x"}},
	} {
		if got, _ := post(controlapi.PathJoin, req); got != string(reason.SSOTokenUsed) {
			t.Errorf("%s: %s, want %s", name, got, reason.SSOTokenUsed)
		}
	}
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, node := range nodes {
		if node.Owner == "bob@example.com" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d nodes owned by bob, want the one: %+v", n, nodes)
	}
}

// signInPost posts a login or join request to m's coordinator and returns
// "ok" and the issued certificate's incarnation, or the refusal's code.
func signInPost(t *testing.T, m *mesh, path string, req any) (string, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.PinnedClientTLSAt(m.co.CAFingerprint(), m.clock.Now)}}
	defer hc.CloseIdleConnections()
	body, _ := json.Marshal(req)
	resp, err := hc.Post(m.co.URL()+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Code        string `json:"code"`
		Certificate string `json:"certificate"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return out.Code, ""
	}
	certs, err := pki.DecodeCertsPEM([]byte(out.Certificate))
	if err != nil || len(certs) == 0 {
		t.Fatalf("answer's certificate: %v", err)
	}
	return "ok", pki.Incarnation(certs[0])
}

// newCSR is a PEM certificate request for a new key.
func newCSR(t *testing.T) string {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pki.EncodeCSRPEM(csr))
}

// TestBackupKeepsLoginsAndUsedIDTokens: a restore neither signs people
// out nor lets an ID token that signed in before the backup sign in again.
func TestBackupKeepsLoginsAndUsedIDTokens(t *testing.T) {
	m, p := startSSOMesh(t)
	tok := deviceToken(t, p, p.ClientID, "bob")
	if got, _ := signInPost(t, m, controlapi.PathLogin, controlapi.LoginRequest{IDToken: tok, CSR: newCSR(t)}); got != "ok" {
		t.Fatalf("login: %s", got)
	}
	m.stop()
	var buf bytes.Buffer
	if _, err := coordinator.Backup(context.Background(), coordinator.BackupConfig{DataDir: m.data}, &buf); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: restored}, &buf); err != nil {
		t.Fatal(err)
	}
	before, after := dump(t, coordinator.DatabasePath(m.data)), dump(t, coordinator.DatabasePath(restored))
	for _, table := range []string{"logins", "sso_tokens"} {
		if len(before[table]) != 1 || !slices.Equal(before[table], after[table]) {
			t.Errorf("table %s: %q before, %q restored", table, before[table], after[table])
		}
	}
	copyKeyFiles(t, m.data, restored)
	m.data = restored
	m.start()
	if got, _ := signInPost(t, m, controlapi.PathLogin, controlapi.LoginRequest{IDToken: tok, CSR: newCSR(t)}); got != string(reason.SSOTokenUsed) {
		t.Fatalf("the used token after a restore: %s, want %s", got, reason.SSOTokenUsed)
	}
}
