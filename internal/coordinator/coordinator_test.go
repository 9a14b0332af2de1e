package coordinator_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// clock is a settable clock shared by the coordinator and clients in a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type mesh struct {
	t      testing.TB
	data   string
	listen string
	clock  *clock
	limits coordinator.Limits
	// metrics, if set, records the coordinator's metrics.
	metrics *metrics.Set
	co      *coordinator.Coordinator
	admin   *controlclient.Client
	// sso and ssoAdmins configure an OpenID Connect issuer (sso_test.go).
	sso       sso.Config
	ssoAdmins []string
	// database and dbKey, when set, put the registry in PostgreSQL.
	database string
	dbKey    *sealed.Key
}

func startMesh(t testing.TB) *mesh {
	t.Helper()
	return startMeshWith(t, coordinator.Limits{})
}

// startMeshWith is startMesh with the coordinator's limits set.
func startMeshWith(t testing.TB, limits coordinator.Limits) *mesh {
	t.Helper()
	m := &mesh{t: t, data: filepath.Join(t.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(), limits: limits}
	m.start()
	return m
}

func (m *mesh) start() {
	m.t.Helper()
	co, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: m.data, Listen: m.listen, TrustDomain: "test.mesh", Now: m.clock.Now, Limits: m.limits, Metrics: m.metrics,
		SSO: m.sso, SSOAdminGroups: m.ssoAdmins, Database: m.database, DatabaseKey: m.dbKey,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	m.co = co
	// A restart listens where the first start did: auth keys and node
	// configurations carry the address.
	m.listen = co.Addr().String()
	m.admin = m.client(co.AdminDir())
	m.t.Cleanup(m.stop)
}

func (m *mesh) stop() {
	if m.admin != nil {
		m.admin.Close()
		m.admin = nil
	}
	if m.co != nil {
		m.co.Close()
		m.co = nil
	}
}

func (m *mesh) client(dir string) *controlclient.Client {
	m.t.Helper()
	return coordinatortest.NewClient(m.t, dir, m.clock.Now)
}

func (m *mesh) key(req controlapi.KeyCreateRequest) string {
	m.t.Helper()
	return coordinatortest.CreateKey(m.t, m.admin, req)
}

func (m *mesh) join(key, name, kind string) (string, error) {
	dir := filepath.Join(m.t.TempDir(), name)
	_, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: name, Kind: kind, State: dir, Now: m.clock.Now})
	return dir, err
}

func (m *mesh) mustJoin(key, name, kind string) *controlclient.Client {
	m.t.Helper()
	dir, err := m.join(key, name, kind)
	if err != nil {
		m.t.Fatalf("join %s: %v", name, err)
	}
	return m.client(dir)
}

func (m *mesh) applyPolicy(doc string) int64 {
	m.t.Helper()
	return coordinatortest.ApplyPolicy(m.t, m.admin, doc)
}

func apiCode(err error) string {
	var ae *controlclient.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func TestJoinIssuesCertificateWithOneSPIFFEID(t *testing.T) {
	m := startMesh(t)
	key := m.key(controlapi.KeyCreateRequest{Kind: "tool", Tags: []string{"tag:payments"}})
	c := m.mustJoin(key, "payments-db", "")
	leaf := c.Certificate().Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://test.mesh/tool/payments-db" {
		t.Fatalf("URI SANs = %v", leaf.URIs)
	}
	fi, err := os.Stat(filepath.Join(c.Dir().Path(), "node.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range nodes {
		if n.Name == "payments-db" {
			found = n.Kind == "tool" && n.Status == "active" && len(n.Tags) == 1 && n.Tags[0] == "tag:payments"
		}
	}
	if !found {
		t.Fatalf("nodes list lacks an active tagged payments-db: %+v", nodes)
	}
}

func TestJoinRefusals(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	single := m.key(controlapi.KeyCreateRequest{Kind: "agent"})
	m.mustJoin(single, "a1", "")
	if _, err := m.join(single, "a2", ""); apiCode(errors.Unwrap(err)) != "key_used" && !strings.Contains(fmt.Sprint(err), "key_used") {
		t.Errorf("reusing a single-use key: %v, want key_used", err)
	}

	reusable := m.key(controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
	m.mustJoin(reusable, "b1", "")
	m.mustJoin(reusable, "b2", "")
	if _, err := m.join(reusable, "b1", ""); !strings.Contains(fmt.Sprint(err), "name_taken") {
		t.Errorf("joining under an active node's name: %v, want name_taken", err)
	}
	if _, err := m.join(reusable, "b3", "tool"); !strings.Contains(fmt.Sprint(err), "kind_not_allowed") {
		t.Errorf("joining as a kind the key does not allow: %v, want kind_not_allowed", err)
	}
	if _, err := m.join(reusable, "coordinator", ""); !strings.Contains(fmt.Sprint(err), "reserved") {
		t.Errorf("joining as the reserved coordinator name: %v", err)
	}

	short := m.key(controlapi.KeyCreateRequest{Kind: "agent", Expiry: time.Minute})
	m.clock.Advance(2 * time.Minute)
	if _, err := m.join(short, "c1", ""); !strings.Contains(fmt.Sprint(err), "key_expired") {
		t.Errorf("expired key: %v, want key_expired", err)
	}

	revoked := m.key(controlapi.KeyCreateRequest{Kind: "agent"})
	k, _ := authkey.Parse(revoked)
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathKeys+"/"+k.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.join(revoked, "d1", ""); !strings.Contains(fmt.Sprint(err), "key_revoked") {
		t.Errorf("revoked key: %v, want key_revoked", err)
	}

	forged := k
	forged.Secret = strings.Repeat("0", 64)
	if _, err := m.join(forged.String(), "e1", ""); !strings.Contains(fmt.Sprint(err), "key_unknown") {
		t.Errorf("wrong secret: %v, want key_unknown", err)
	}
	if _, err := m.join(revoked[:len(revoked)-9], "f1", ""); !errors.Is(err, authkey.ErrMalformed) {
		t.Errorf("truncated key: %v, want ErrMalformed", err)
	}
}

func TestJoinRefusesWrongCAFingerprintBeforeSending(t *testing.T) {
	m := startMesh(t)
	k, err := authkey.Parse(m.key(controlapi.KeyCreateRequest{Kind: "agent"}))
	if err != nil {
		t.Fatal(err)
	}
	k.CAFingerprint = strings.Repeat("ab", 32)
	_, err = m.join(k.String(), "mallory", "")
	if !errors.Is(err, pki.ErrFingerprintMismatch) {
		t.Fatalf("join with a wrong fingerprint: %v, want ErrFingerprintMismatch", err)
	}
	// Nothing was sent: the key is still unused.
	var keys []controlapi.KeyInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathKeys, nil, &keys); err != nil {
		t.Fatal(err)
	}
	for _, ki := range keys {
		if ki.ID == k.ID && ki.Uses != 0 {
			t.Fatalf("key %s was used %d times by a join that should not have reached the coordinator", k.ID, ki.Uses)
		}
	}
}

// rawClient returns an HTTP client that trusts the coordinator and presents
// cert (which may be nil), with the given TLS version cap.
func rawClient(t *testing.T, m *mesh, cert *tls.Certificate, maxVersion uint16) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(m.data, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(b)
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: maxVersion}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestAPIRefusesBadClients(t *testing.T) {
	m := startMesh(t)
	url := m.co.URL() + controlapi.PathNodes

	// No certificate.
	if code, body, err := get(rawClient(t, m, nil, 0), url); err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "no_certificate") {
		t.Errorf("no certificate: %d %s %v", code, body, err)
	}
	// A certificate from another CA with a valid-looking SPIFFE ID.
	other, err := pki.NewCA("test.mesh", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign := issueCert(t, other, identity.KindAdmin, "admin", pki.IssueRequest{Now: time.Now()})
	if code, body, err := get(rawClient(t, m, foreign, 0), url); err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "unknown_ca") {
		t.Errorf("foreign CA: %d %s %v", code, body, err)
	}
	// TLS 1.2 is refused in the handshake.
	if _, _, err := get(rawClient(t, m, m.admin.Certificate(), tls.VersionTLS12), url); err == nil {
		t.Error("a TLS 1.2 client was served")
	}
	// Each refusal is a connection event in the audit trail.
	refusals := map[string]bool{}
	for _, e := range m.auditEvents(t, "kind=connection&decision=deny") {
		if e.SrcAddr == "" || e.Dst != "spiffe://test.mesh/admin/coordinator" {
			t.Errorf("refusal event lacks the client address or the coordinator: %+v", e)
		}
		refusals[string(e.Reason)] = true
	}
	for _, reason := range []string{"no_certificate", "unknown_ca", "tls_version"} {
		if !refusals[reason] {
			t.Errorf("no audited refusal with reason %s (have %v)", reason, refusals)
		}
	}
	// A non-admin node cannot use admin paths.
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	if code, body, _ := get(rawClient(t, m, agent.Certificate(), 0), url); code != http.StatusForbidden || !strings.Contains(body, "not_admin") {
		t.Errorf("agent on an admin path: %d %s", code, body)
	}
	// Garbage and oversized bodies change nothing.
	admin := rawClient(t, m, m.admin.Certificate(), 0)
	for body, want := range map[string]int{"{nope": http.StatusBadRequest, `{"kind":"agent","extra":1}`: http.StatusBadRequest,
		strings.Repeat(" ", controlapi.MaxBody+10): http.StatusRequestEntityTooLarge} {
		resp, err := admin.Post(m.co.URL()+controlapi.PathKeys, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("bad body %.20q: status %d, want %d", body, resp.StatusCode, want)
		}
	}
}

func TestExpiredNodeCertificateIsRefused(t *testing.T) {
	m := startMesh(t)
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	m.clock.Advance(2 * time.Hour)
	code, body, err := get(rawClient(t, m, agent.Certificate(), 0), m.co.URL()+controlapi.PathNetmap+"?since=-1")
	if err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Fatalf("expired certificate: %d %s %v", code, body, err)
	}
	if _, err := agent.Renew(context.Background()); err == nil {
		t.Fatal("an expired certificate was renewed")
	}
}

func TestRenewKeepsIdentityAndRevokedNodeCannotRenew(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	before := agent.Certificate().Leaf
	m.clock.Advance(45 * time.Minute)
	tc, err := agent.Renew(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !tc.Leaf.NotAfter.After(before.NotAfter) || tc.Leaf.URIs[0].String() != before.URIs[0].String() {
		t.Fatalf("renewed certificate: %v %v, before %v %v", tc.Leaf.URIs, tc.Leaf.NotAfter, before.URIs, before.NotAfter)
	}
	// The admin's node list says when the renewed certificate lapses.
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(nodes, func(n controlapi.NodeInfo) bool { return n.Name == "agent1" }); i < 0 || !nodes[i].CertExpires.Equal(tc.Leaf.NotAfter) {
		t.Fatalf("node list after the renewal: %+v, want agent1 with cert_expires %v", nodes, tc.Leaf.NotAfter)
	}
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/agent1/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Renew(ctx); apiCode(err) != string(reason.Revoked) || !agent.Revoked() {
		t.Fatalf("revoked node renewed or was not told it is revoked: %v (client marked revoked: %v)", err, agent.Revoked())
	}
	// The name is free again, and the old certificate stays dead for the
	// new node's sake; it is still told it was revoked.
	fresh := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	if _, err := agent.Renew(ctx); apiCode(err) != string(reason.Revoked) {
		t.Fatalf("the revoked incarnation after its name was reused: %v, want revoked", err)
	}
	if _, err := fresh.Renew(ctx); err != nil || fresh.Revoked() {
		t.Fatalf("new incarnation cannot renew: %v (client marked revoked: %v)", err, fresh.Revoked())
	}
}

func TestRevocationReachesWatchingNode(t *testing.T) {
	m := startMesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watcher := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "victim", "")
	// The gateway only hears of peers the policy lets reach it.
	m.applyPolicy(`{"grants": [{"src": ["agent:victim"], "dst": ["tool:files"], "tools": ["*"]}]}`)
	maps := make(chan *netmap.Netmap, 16)
	done := make(chan error, 1)
	go func() { done <- watcher.Watch(ctx, func(nm *netmap.Netmap) { maps <- nm }) }()
	waitFor := func(cond func(*netmap.Netmap) bool) *netmap.Netmap {
		t.Helper()
		for {
			select {
			case nm := <-maps:
				if cond(nm) {
					return nm
				}
			case <-time.After(10 * time.Second):
				t.Fatal("netmap change did not arrive")
			}
		}
	}
	active := func(nm *netmap.Netmap) bool { n, ok := nm.Node("victim"); return ok && n.Status == netmap.StatusActive }
	waitFor(active)
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/victim/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(func(nm *netmap.Netmap) bool { return !active(nm) })
	cancel()
	<-done
}

func TestRestartKeepsCANodesAndKeys(t *testing.T) {
	m := startMesh(t)
	fp := m.co.CAFingerprint()
	reusable := m.key(controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
	agent := m.mustJoin(reusable, "agent1", "")
	m.stop()
	m.start()
	if m.co.CAFingerprint() != fp {
		t.Fatal("CA changed across restart")
	}
	// The node's certificate is still accepted (same CA, same record), and
	// the reusable key still admits nodes.
	if _, err := agent.Renew(context.Background()); err != nil {
		t.Fatalf("node from before the restart cannot renew: %v", err)
	}
	m.mustJoin(reusable, "agent2", "")
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, n := range nodes {
		names[n.Name] = true
	}
	if !names["agent1"] || !names["agent2"] || !names["admin"] {
		t.Fatalf("nodes after restart: %v", names)
	}
}

func TestNodeStartsFromCachedNetmapWithCoordinatorDown(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	tool := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	nm, err := tool.Netmap(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(nm)
	if err := tool.Dir().SaveNetmap(b); err != nil {
		t.Fatal(err)
	}
	m.stop()
	restarted := m.client(tool.Dir().Path())
	wctx, cancel := context.WithCancel(ctx)
	got := make(chan *netmap.Netmap, 1)
	done := make(chan error, 1)
	go func() {
		done <- restarted.Watch(wctx, func(nm *netmap.Netmap) {
			select {
			case got <- nm:
			default:
			}
		})
	}()
	select {
	case cached := <-got:
		if cached.Version != nm.Version {
			t.Fatalf("cached netmap version %d, want %d", cached.Version, nm.Version)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no netmap from cache with the coordinator down")
	}
	cancel()
	<-done
}

// auditEvents returns the events the audit query API returns for query.
func (m *mesh) auditEvents(t *testing.T, query string) []audit.Event {
	t.Helper()
	body, err := m.admin.Stream(context.Background(), controlapi.PathAudit+"?"+query)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var out []audit.Event
	dec := json.NewDecoder(body)
	for dec.More() {
		var e audit.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestAuditRetentionPrunesAndVerifyStillPasses(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	for range 5 {
		m.key(controlapi.KeyCreateRequest{Kind: "agent"}) // admin events
	}
	var rep struct {
		OK     bool  `json:"ok"`
		Events int64 `json:"events"`
	}
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err) // also signs a checkpoint over the events so far
	}
	before := rep.Events
	m.stop()
	m.clock.Advance(48 * time.Hour)
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: m.data, Listen: m.listen, Now: m.clock.Now, AuditRetention: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m.co = co
	m.admin = m.client(co.AdminDir())
	// Pruning runs at start; verify afterwards must pass and see fewer events.
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil || !rep.OK {
		t.Fatalf("verify after pruning: %+v %v", rep, err)
	}
	if rep.Events >= before {
		t.Fatalf("events after pruning = %d, want fewer than %d", rep.Events, before)
	}
}

// TestGatewayReceiptDetectsTailDeletedWhileCoordinatorWasDown: a tool node
// keeps the signed receipt of its last shipped batch. Someone with the
// database deletes the newest events and the checkpoints that cover them
// while the coordinator is stopped; after a restart the database alone
// verifies, the node's receipt does not.
func TestGatewayReceiptDetectsTailDeletedWhileCoordinatorWasDown(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	key := m.key(controlapi.KeyCreateRequest{Kind: "tool"})
	dir, err := m.join(key, "ledger", "")
	if err != nil {
		t.Fatal(err)
	}
	tool := m.client(dir)
	base := m.clock.Now()
	events := make([]audit.Event, 20)
	for i := range events {
		events[i] = audittest.Event(i, base)
		events[i].Dst = "spiffe://test.mesh/tool/ledger"
	}
	if err := tool.Send(ctx, events); err != nil {
		t.Fatal(err)
	}
	d, err := nodestate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(d.ReceiptPath())
	if err != nil {
		t.Fatalf("the node kept no receipt: %v", err)
	}
	var receipt audit.Receipt
	if err := json.Unmarshal(b, &receipt); err != nil {
		t.Fatal(err)
	}
	m.stop()
	db, err := store.OpenSQLite(coordinator.DatabasePath(m.data))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DELETE FROM audit_events WHERE seq > ?`,
		`DELETE FROM audit_checkpoints WHERE seq > ?`,
	} {
		if _, err := db.Exec(q, receipt.Seq-5); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	m.start()

	var rep audit.Report
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil || !rep.OK {
		t.Fatalf("verify without the receipt: %+v %v (the gap receipts close)", rep, err)
	}
	req := controlapi.VerifyRequest{Receipts: []audit.Receipt{receipt}}
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathVerify, req, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.BrokenSeq != receipt.Seq || !strings.Contains(rep.Problem, "deleted") {
		t.Fatalf("verify with the receipt: %+v", rep)
	}
}

// TestSecondCoordinatorOnOneDataDirectoryIsRefusedAndLeavesTheAdminStateAlone:
// a second coordinator on a data directory in use once rewrote the admin
// identity's coordinator address to its own port, and every admin command
// failed after it stopped. It is now refused before it writes anything,
// with the holder named, and a restart after Close works.
func TestSecondCoordinatorOnOneDataDirectoryIsRefusedAndLeavesTheAdminStateAlone(t *testing.T) {
	m := startMesh(t)
	adminState, err := nodestate.Open(m.co.AdminDir())
	if err != nil {
		t.Fatal(err)
	}
	before, err := adminState.Config()
	if err != nil {
		t.Fatal(err)
	}
	second, err := coordinator.Start(context.Background(), coordinator.Config{DataDir: m.data, Listen: "127.0.0.1:0", TrustDomain: "test.mesh", Now: m.clock.Now})
	if err == nil {
		second.Close()
		t.Fatal("a second coordinator started on a data directory in use")
	}
	want := fmt.Sprintf("data directory %s is in use by agentmesh coordinator (pid %d, listening on %s, since %s); stop it first",
		m.data, os.Getpid(), m.co.Addr(), m.clock.Now().Format(time.RFC3339))
	if !errors.Is(err, dirlock.ErrInUse) || err.Error() != want {
		t.Fatalf("second coordinator:\n got %v\nwant %s", err, want)
	}
	after, err := adminState.Config()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after, before) || after.CoordinatorURL != m.co.URL() {
		t.Fatalf("the admin state changed: %+v, was %+v (the coordinator is at %s)", after, before, m.co.URL())
	}
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatalf("an admin command against the first coordinator: %v", err)
	}
	m.stop()
	m.start() // Close released the lock
}

// TestNodeListCountsAGatewayServingOnlyWhileItWatchesItsNetmap: a tool
// node with a registered address serves while its netmap watch is recent
// (one long poll and a margin); silence beyond that, as after it stopped,
// lists it as not serving though its address stays; a one-off look
// (since=-1, what 'agentmesh status' sends) is not a sign of life.
func TestNodeListCountsAGatewayServingOnlyWhileItWatchesItsNetmap(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	tool := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "bot", "")
	if err := tool.Register(ctx, []string{"127.0.0.1:7800"}); err != nil {
		t.Fatal(err)
	}
	serving := func() map[string]bool {
		t.Helper()
		var nodes []controlapi.NodeInfo
		if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, n := range nodes {
			out[n.Name] = n.Serving
		}
		return out
	}
	watch := func(c *controlclient.Client, since int64) {
		t.Helper()
		if _, err := c.Netmap(ctx, since); err != nil {
			t.Fatal(err)
		}
	}
	watch(tool, 0)
	watch(agent, 0)
	if s := serving(); !s["files"] || s["bot"] {
		t.Fatalf("after a watch: serving %v, want files and not bot", s)
	}
	m.clock.Advance(25*time.Second + 16*time.Second)
	if s := serving(); s["files"] {
		t.Fatalf("after a long poll and the margin without a watch: files still serving")
	}
	watch(tool, -1)
	if s := serving(); s["files"] {
		t.Fatalf("a one-off look (since=-1) counted as a watch")
	}
	watch(tool, 0)
	if s := serving(); !s["files"] {
		t.Fatalf("after a new watch: files not serving")
	}
}

// TestJoinAskedAgainByTheSameNodeGetsItsRegistration is a join whose
// answer was lost (its coordinator died after the commit; the client then
// asks another): the same node, with the same key pair and auth key, gets
// a certificate for the registration it already has, not name_taken or
// key_used. Anyone else gets the refusals as before.
func TestJoinAskedAgainByTheSameNodeGetsItsRegistration(t *testing.T) {
	m := startMesh(t)
	k, err := authkey.Parse(m.key(controlapi.KeyCreateRequest{Kind: "agent"}))
	if err != nil {
		t.Fatal(err)
	}
	join := func(name string, key crypto.Signer, secret string) (int, controlapi.CertResponse, string) {
		t.Helper()
		csr, _ := pki.CreateCSR(key)
		body := mustJSON(t, controlapi.JoinRequest{KeyID: k.ID, Secret: secret, Name: name, CSR: string(pki.EncodeCSRPEM(csr))})
		resp, err := rawClient(t, m, nil, 0).Post(m.co.URL()+controlapi.PathJoin, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var cr controlapi.CertResponse
		var ae controlapi.Error
		json.Unmarshal(b, &cr)
		json.Unmarshal(b, &ae)
		return resp.StatusCode, cr, ae.Code
	}
	incarnation := func(cr controlapi.CertResponse) string {
		certs, err := pki.DecodeCertsPEM([]byte(cr.Certificate))
		if err != nil || len(certs) != 1 {
			t.Fatalf("certificate: %v", err)
		}
		return pki.Incarnation(certs[0])
	}
	nodeKey, _ := pki.NewKey()
	status, first, code := join("a1", nodeKey, k.Secret)
	if status != http.StatusOK {
		t.Fatalf("first join: %d %s", status, code)
	}
	status, again, code := join("a1", nodeKey, k.Secret)
	if status != http.StatusOK || incarnation(again) != incarnation(first) {
		t.Fatalf("the same node asking again: %d %s, incarnation %s, want %s", status, code, incarnation(again), incarnation(first))
	}
	otherKey, _ := pki.NewKey()
	if _, _, code := join("a1", otherKey, k.Secret); code != "key_used" {
		t.Fatalf("another key pair with the used key and the same name: %q, want key_used", code)
	}
	if _, _, code := join("a2", nodeKey, k.Secret); code != "key_used" {
		t.Fatalf("the same key pair under another name: %q, want key_used", code)
	}
	if _, _, code := join("a1", nodeKey, strings.Repeat("0", 64)); code != "key_unknown" {
		t.Fatalf("the same node with a wrong secret: %q, want key_unknown", code)
	}
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, node := range nodes {
		if node.Name == "a1" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d registrations of a1, want 1", n)
	}
}
