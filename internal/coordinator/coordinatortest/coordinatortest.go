// Package coordinatortest runs a real coordinator on 127.0.0.1:0 for tests
// of the node side (the control client, the node runtime): real TLS, a
// real SQLite registry and audit store, and a clock the test moves by
// hand. It joins nodes with real auth keys and hands out control clients
// for their state directories.
package coordinatortest

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// Options configure Start. The zero value is usable.
type Options struct {
	// LongPoll is how long a netmap watch waits before it answers
	// "nothing new"; zero is the coordinator's default (25 s).
	LongPoll time.Duration
	// CertTTL is the certificates' lifetime; zero is the default (1 h).
	CertTTL time.Duration
}

// Mesh is a running coordinator with its admin client. Stop (also run at
// the test's cleanup) stops it; Restart starts it again on the same data
// and address.
type Mesh struct {
	tb  testing.TB
	cfg coordinator.Config
	// Clock is the time of the coordinator and of every client Client
	// makes; it starts at the wall clock's now and moves only when the
	// test moves it.
	Clock *pkitest.Clock
	// Coordinator is nil while stopped.
	Coordinator *coordinator.Coordinator
	// Admin is the coordinator's own admin client.
	Admin *controlclient.Client
}

// Start starts a coordinator in a fresh data directory.
func Start(tb testing.TB, opts Options) *Mesh {
	tb.Helper()
	clock := pkitest.NewClock(time.Now())
	m := &Mesh{tb: tb, Clock: clock, cfg: coordinator.Config{
		DataDir: filepath.Join(tb.TempDir(), "coordinator"), Listen: "127.0.0.1:0", TrustDomain: "test.mesh",
		Now: clock.Now, LongPoll: opts.LongPoll, CertTTL: opts.CertTTL,
	}}
	m.start()
	tb.Cleanup(m.Stop)
	return m
}

func (m *Mesh) start() {
	m.tb.Helper()
	co, err := coordinator.Start(context.Background(), m.cfg)
	if err != nil {
		m.tb.Fatal(err)
	}
	// A restart listens where the first start did: auth keys and node
	// configurations carry the address.
	m.cfg.Listen = co.Addr().String()
	m.Coordinator = co
	m.Admin = m.Client(co.AdminDir())
}

// Stop stops the coordinator; it does nothing when it is stopped.
func (m *Mesh) Stop() {
	if m.Coordinator == nil {
		return
	}
	m.Admin.Close()
	m.Coordinator.Close()
	m.Coordinator, m.Admin = nil, nil
}

// Restart starts the stopped coordinator again, on the same data
// directory and address.
func (m *Mesh) Restart() {
	m.tb.Helper()
	m.start()
}

// URL is the coordinator's address, "https://127.0.0.1:PORT".
func (m *Mesh) URL() string { return "https://" + m.cfg.Listen }

// Key creates an auth key.
func (m *Mesh) Key(req controlapi.KeyCreateRequest) string {
	m.tb.Helper()
	return CreateKey(m.tb, m.Admin, req)
}

// Join joins a node of kind named name with tags, with a fresh auth key,
// and returns its state directory.
func (m *Mesh) Join(kind, name string, tags ...string) string {
	m.tb.Helper()
	dir := filepath.Join(m.tb.TempDir(), name)
	key := m.Key(controlapi.KeyCreateRequest{Kind: kind, Tags: append([]string{}, tags...)})
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: name, State: dir, Now: m.Clock.Now}); err != nil {
		m.tb.Fatalf("join %s: %v", name, err)
	}
	return dir
}

// Client returns a control client for the node whose state is in dir, on
// the mesh's clock, closed at the test's cleanup.
func (m *Mesh) Client(dir string) *controlclient.Client {
	m.tb.Helper()
	return NewClient(m.tb, dir, m.Clock.Now)
}

// ApplyPolicy applies a policy document and returns its version.
func (m *Mesh) ApplyPolicy(doc string) int64 {
	m.tb.Helper()
	return ApplyPolicy(m.tb, m.Admin, doc)
}

// NewClient returns a control client for the node whose state is in dir,
// with the clock now, closed at the test's cleanup.
func NewClient(tb testing.TB, dir string, now func() time.Time) *controlclient.Client {
	tb.Helper()
	d, err := nodestate.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := controlclient.New(d, controlclient.Options{Now: now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// CreateKey creates an auth key through the admin client admin.
func CreateKey(tb testing.TB, admin *controlclient.Client, req controlapi.KeyCreateRequest) string {
	tb.Helper()
	var resp controlapi.KeyCreateResponse
	if err := admin.Call(context.Background(), http.MethodPost, controlapi.PathKeys, req, &resp); err != nil {
		tb.Fatal(err)
	}
	return resp.Key
}

// ApplyPolicy applies a policy document through the admin client admin
// and returns its version.
func ApplyPolicy(tb testing.TB, admin *controlclient.Client, doc string) int64 {
	tb.Helper()
	var pv controlapi.PolicyVersion
	if err := admin.Call(context.Background(), http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv); err != nil {
		tb.Fatal(err)
	}
	return pv.Version
}

// DeadURL returns the URL of a loopback port where nothing listens any
// more: a coordinator that has died.
func DeadURL(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	ln.Close()
	return url
}

// JoinedThroughDead makes the node whose state is in dir one that joined
// through a coordinator that has died since (DeadURL, returned) and that
// also knows the coordinator at live, for failover tests.
func JoinedThroughDead(tb testing.TB, dir, live string) string {
	tb.Helper()
	d, err := nodestate.Open(dir)
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := d.Config()
	if err != nil {
		tb.Fatal(err)
	}
	dead := DeadURL(tb)
	cfg.CoordinatorURL, cfg.Coordinators = dead, netmap.SortCoordinators([]string{dead, live})
	if err := d.SaveConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	return dead
}
