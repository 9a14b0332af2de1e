package coordinator_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// sharedMesh is several coordinators on one PostgreSQL database.
type sharedMesh struct {
	t     *testing.T
	db    string
	key   *sealed.Key
	dir   string
	cos   []*coordinator.Coordinator
	admin []*controlclient.Client
}

func startShared(t *testing.T, srv *pgtest.Server, n int) *sharedMesh {
	t.Helper()
	key, err := sealed.New([]byte(strings.Repeat("k", sealed.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	m := &sharedMesh{t: t, db: srv.NewDatabase(t), key: key, dir: t.TempDir()}
	for range n {
		m.add()
	}
	return m
}

// add starts one more coordinator on the mesh's database.
func (m *sharedMesh) add() *coordinator.Coordinator {
	m.t.Helper()
	i := len(m.cos)
	co, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(m.dir, "c"+string(rune('a'+i))), Database: m.db, DatabaseKey: m.key,
		Listen: "127.0.0.1:0", TrustDomain: "test.mesh", LongPoll: 5 * time.Second,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { co.Close() })
	m.cos = append(m.cos, co)
	m.admin = append(m.admin, coordinatortest.NewClient(m.t, co.AdminDir(), nil))
	return co
}

// joinThrough joins a node with a key minted by coordinator from, through
// coordinator via, and returns a client of it that talks to via.
func (m *sharedMesh) joinThrough(from, via int, name string) (*controlclient.Client, string) {
	m.t.Helper()
	var resp controlapi.KeyCreateResponse
	if err := m.admin[from].Call(context.Background(), http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "tool"}, &resp); err != nil {
		m.t.Fatal(err)
	}
	k, err := authkey.Parse(resp.Key)
	if err != nil {
		m.t.Fatal(err)
	}
	k.CoordinatorURL = m.cos[via].URL()
	dir := filepath.Join(m.t.TempDir(), name)
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: k.String(), Name: name, State: dir}); err != nil {
		m.t.Fatalf("join %s through coordinator %d: %v", name, via, err)
	}
	return coordinatortest.NewClient(m.t, dir, nil), dir
}

// clientOf returns a client of the node in dir that talks to coordinator i.
func (m *sharedMesh) clientOf(dir string, i int) *controlclient.Client {
	m.t.Helper()
	d, err := nodestate.Open(dir)
	if err != nil {
		m.t.Fatal(err)
	}
	cfg, err := d.Config()
	if err != nil {
		m.t.Fatal(err)
	}
	cfg.CoordinatorURL = m.cos[i].URL()
	if err := d.SaveConfig(cfg); err != nil {
		m.t.Fatal(err)
	}
	return coordinatortest.NewClient(m.t, dir, nil)
}

// awaitNetmap follows c's netmap until ok holds for it, with the
// coordinator's long poll: each answer comes when the netmap changes.
func awaitNetmap(t *testing.T, c *controlclient.Client, ok func(*netmap.Netmap) bool) *netmap.Netmap {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var since int64
	for {
		nm, err := c.Netmap(ctx, since)
		if err != nil {
			t.Fatalf("waiting for a netmap: %v", err)
		}
		if nm == nil {
			continue
		}
		if ok(nm) {
			return nm
		}
		since = nm.Version
	}
}

func hasNode(name string) func(*netmap.Netmap) bool {
	return func(nm *netmap.Netmap) bool {
		return slices.ContainsFunc(nm.Nodes, func(n netmap.Node) bool { return string(n.Name) == name && n.Status == netmap.StatusActive })
	}
}

func TestCoordinatorsOnOneDatabaseAreOneMesh(t *testing.T) {
	m := startShared(t, pgtest.Shared(t), 2)
	a, b := m.cos[0], m.cos[1]
	if a.CAFingerprint() != b.CAFingerprint() || a.AuditKeyFingerprint() != b.AuditKeyFingerprint() || a.TrustDomain() != b.TrustDomain() {
		t.Fatalf("coordinators disagree: CA %s/%s, audit key %s/%s", a.CAFingerprint(), b.CAFingerprint(), a.AuditKeyFingerprint(), b.AuditKeyFingerprint())
	}
	// The CA key is in the database, sealed; nothing of it on disk.
	for _, co := range m.cos {
		if _, err := os.Stat(filepath.Join(filepath.Dir(co.AdminDir()), "ca.key")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a shared-database coordinator wrote ca.key to its data directory: %v", err)
		}
	}
	// A key minted on A joins through B; A's watchers see the node.
	_, dir := m.joinThrough(0, 1, "files")
	onA := m.clientOf(dir, 0)
	awaitNetmap(t, onA, hasNode("files"))
	// A policy applied on A reaches a node watching B.
	onB := m.clientOf(dir, 1)
	var pv controlapi.PolicyVersion
	doc := `{"grants": [{"src": ["agent:x"], "dst": ["tool:files"], "tools": ["*"]}]}`
	if err := m.admin[0].Call(context.Background(), http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv); err != nil {
		t.Fatal(err)
	}
	awaitNetmap(t, onB, func(nm *netmap.Netmap) bool { return nm.Policy.Version == pv.Version })
	// Either one lists both coordinators' admin nodes once: one admin
	// registration, shared.
	var nodes []controlapi.NodeInfo
	if err := m.admin[1].Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	admins := 0
	for _, n := range nodes {
		if n.Name == coordinator.AdminName && n.Status == "active" {
			admins++
		}
	}
	if admins != 1 {
		t.Fatalf("%d active admin nodes, want 1: %+v", admins, nodes)
	}
}

func TestRevocationOnOneCoordinatorHoldsOnTheOthers(t *testing.T) {
	m := startShared(t, pgtest.Shared(t), 2)
	_, dir := m.joinThrough(0, 0, "files")
	onB := m.clientOf(dir, 1)
	if _, err := onB.Renew(context.Background()); err != nil {
		t.Fatalf("renewal through B before the revocation: %v", err)
	}
	if err := m.admin[0].Call(context.Background(), http.MethodPost, controlapi.PathNodes+"/files/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err := onB.Renew(context.Background())
	if apiCode(err) != "revoked" {
		t.Fatalf("renewal through B after A revoked the node: %v, want revoked", err)
	}
}

func TestSharedDatabaseNeedsTheDatabaseKey(t *testing.T) {
	m := startShared(t, pgtest.Shared(t), 1)
	other, _ := sealed.New([]byte(strings.Repeat("x", sealed.KeySize)))
	_, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(m.dir, "wrong"), Database: m.db, DatabaseKey: other, Listen: "127.0.0.1:0",
	})
	if !errors.Is(err, sealed.ErrOpen) {
		t.Fatalf("a coordinator with another database key: %v, want sealed.ErrOpen", err)
	}
	t.Setenv(sealed.EnvKey, "")
	_, err = coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(m.dir, "none"), Database: m.db, Listen: "127.0.0.1:0",
	})
	if !errors.Is(err, sealed.ErrNoKey) {
		t.Fatalf("a coordinator without a database key: %v, want sealed.ErrNoKey", err)
	}
}

func TestNetmapListsEveryLiveCoordinator(t *testing.T) {
	m := startShared(t, pgtest.Shared(t), 2)
	_, dir := m.joinThrough(0, 0, "files")
	onA := m.clientOf(dir, 0)
	c := m.add()
	want := []string{m.cos[0].URL(), m.cos[1].URL(), c.URL()}
	slices.Sort(want)
	awaitNetmap(t, onA, func(nm *netmap.Netmap) bool { return slices.Equal(coordinatorsOf(t, nm), want) })
	c.Close()
	want = slices.DeleteFunc(want, func(u string) bool { return u == c.URL() })
	awaitNetmap(t, onA, func(nm *netmap.Netmap) bool { return slices.Equal(coordinatorsOf(t, nm), want) })
}

// coordinatorsOf reads the netmap's coordinator list through its JSON, so
// that this test does not depend on the field's Go name.
func coordinatorsOf(t *testing.T, nm *netmap.Netmap) []string {
	b, err := json.Marshal(nm)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Coordinators []string `json:"coordinators"`
	}
	json.Unmarshal(b, &v)
	return v.Coordinators
}

func TestReadyzSaysWhetherTheDatabaseAnswers(t *testing.T) {
	srv := pgtest.Start(t)
	m := startShared(t, srv, 1)
	get := func(path string) int {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(m.cos[0].URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get("/readyz"); s != http.StatusOK {
		t.Fatalf("/readyz = %d with the database up", s)
	}
	srv.Stop()
	if s := get("/readyz"); s != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with the database down, want 503", s)
	}
	if s := get("/healthz"); s != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200 while the process serves", s)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if s := get("/readyz"); s != http.StatusOK {
		t.Fatalf("/readyz = %d after the database came back", s)
	}
}

// insecureTLS is for probes that check only a status, as a load
// balancer's health check does.
func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
}

// TestDatabaseRestartUnderLoad restarts PostgreSQL while nodes ship audit
// events through two coordinators: the coordinators say they are not
// ready while it is down, shippers retry as a node's spool does, and once
// it is back everything resumes on its own: every event is stored exactly
// once, the chain verifies, and a policy applied afterwards on one
// coordinator still reaches a node watching the other (its listener
// reconnected).
func TestDatabaseRestartUnderLoad(t *testing.T) {
	srv := pgtest.Start(t)
	m := startShared(t, srv, 2)
	const shippers, batches, per = 3, 12, 10
	var dirs []string
	for i := range shippers {
		_, dir := m.joinThrough(0, i%2, fmt.Sprintf("tool-%d", i))
		dirs = append(dirs, dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Each shipper ships two batches, waits for the database to go down,
	// and ships the rest, retrying, while it is down and after.
	var shipped sync.WaitGroup
	shipped.Add(shippers)
	stopped := make(chan struct{})
	failures := make(chan struct{}, 1000)
	var wg sync.WaitGroup
	errs := make(chan error, shippers)
	for i, dir := range dirs {
		cl := m.clientOf(dir, i%2)
		dst := "spiffe://test.mesh/tool/" + fmt.Sprintf("tool-%d", i)
		wg.Go(func() {
			var b backoff.Backoff
			b.Max = 500 * time.Millisecond
			for n := range batches {
				if n == 2 {
					shipped.Done()
					<-stopped
				}
				for {
					err := cl.Send(ctx, eventsAt(dst, n*per, per, time.Now()))
					if err == nil {
						b.Reset()
						break
					}
					select {
					case failures <- struct{}{}:
					default:
					}
					if ctx.Err() != nil {
						errs <- fmt.Errorf("%s: %w", dst, err)
						return
					}
					b.Wait(ctx)
				}
			}
		})
	}
	shipped.Wait()
	srv.Stop()
	close(stopped)
	for _, co := range m.cos {
		if code := readyz(t, co); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz of %s = %d with the database down, want 503", co.URL(), code)
		}
	}
	// Shipping fails while the database is down, and is retried.
	for range shippers {
		<-failures
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, co := range m.cos {
		if code := readyz(t, co); code != http.StatusOK {
			t.Errorf("/readyz of %s = %d after the restart", co.URL(), code)
		}
	}
	db, err := store.Open(ctx, m.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := auditstore.Verify(ctx, db, auditKeyOf(t, m))
	if err != nil || !rep.OK {
		t.Fatalf("audit verify after the restart: %v %v", rep, err)
	}
	var n, distinct int
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT dst || ' ' || id) FROM audit_events WHERE kind = 'request'`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != shippers*batches*per || distinct != n {
		t.Fatalf("%d request events (%d distinct) stored, want %d, each once", n, distinct, shippers*batches*per)
	}
	onB := m.clientOf(dirs[0], 1)
	var pv controlapi.PolicyVersion
	doc := `{"grants": [{"src": ["agent:x"], "dst": ["tool:tool-0"], "tools": ["*"]}]}`
	if err := m.admin[0].Call(ctx, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv); err != nil {
		t.Fatal(err)
	}
	awaitNetmap(t, onB, func(nm *netmap.Netmap) bool { return nm.Policy.Version == pv.Version })
}

// readyz returns the status of co's /readyz.
func readyz(t *testing.T, co *coordinator.Coordinator) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(co.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestCoordinatorsStartingAtOnceShareOneAdmin starts three coordinators
// on a fresh database at the same time: one creates the CA, the keys and
// the admin registration, and the others take them.
func TestCoordinatorsStartingAtOnceShareOneAdmin(t *testing.T) {
	m := startShared(t, pgtest.Shared(t), 0)
	var wg sync.WaitGroup
	cos := make([]*coordinator.Coordinator, 3)
	errs := make([]error, 3)
	for i := range cos {
		wg.Go(func() {
			cos[i], errs[i] = coordinator.Start(context.Background(), coordinator.Config{
				DataDir: filepath.Join(m.dir, fmt.Sprint(i)), Database: m.db, DatabaseKey: m.key, Listen: "127.0.0.1:0",
			})
		})
	}
	wg.Wait()
	for i, co := range cos {
		if errs[i] != nil {
			t.Fatalf("coordinator %d: %v", i, errs[i])
		}
		t.Cleanup(func() { co.Close() })
		if co.CAFingerprint() != cos[0].CAFingerprint() || co.AuditKeyFingerprint() != cos[0].AuditKeyFingerprint() {
			t.Fatalf("coordinator %d has its own keys", i)
		}
	}
	var nodes []controlapi.NodeInfo
	if err := coordinatortest.NewClient(t, cos[2].AdminDir(), nil).Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].Name != coordinator.AdminName {
		t.Fatalf("nodes after three starts at once: %+v, want the one admin", nodes)
	}
}
