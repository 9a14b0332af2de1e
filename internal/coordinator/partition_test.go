package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// dbProxy stands between one coordinator and PostgreSQL on loopback TCP,
// so that a test can cut that coordinator off the database while the
// others keep it.
type dbProxy struct {
	ln     net.Listener
	target string // the server's Unix socket

	mu    sync.Mutex
	cut   bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func newDBProxy(t *testing.T, socketDir string) *dbProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dbProxy{ln: ln, target: filepath.Join(socketDir, ".s.PGSQL.5432")}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.partition()
		p.wg.Wait()
	})
	return p
}

func (p *dbProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("unix", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.wg.Add(2)
		p.mu.Unlock()
		go func() { defer p.wg.Done(); io.Copy(up, c); up.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, up); c.Close() }()
	}
}

// partition cuts every connection and refuses new ones, as a network
// partition between this coordinator and the database would (faster: the
// coordinator learns at once rather than at a timeout).
func (p *dbProxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *dbProxy) heal() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// url is the proxied URL of the database that direct names.
func (p *dbProxy) url(t *testing.T, direct string) string {
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	return "postgres://postgres@" + p.ln.Addr().String() + u.Path + "?sslmode=disable"
}

// TestPartitionedCoordinatorNeitherAppendsNorIssues cuts coordinator B off
// the database while A keeps it: B must not add to the audit chain nor
// renew the certificate of a node A revoked meanwhile; once healed, B
// serves again and the chain verifies whole.
func TestPartitionedCoordinatorNeitherAppendsNorIssues(t *testing.T) {
	srv := pgtest.Shared(t)
	m := startShared(t, srv, 1)
	proxy := newDBProxy(t, srv.SocketDir())
	b, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(m.dir, "b"), Database: proxy.url(t, m.db), DatabaseKey: m.key,
		Listen: "127.0.0.1:0", TrustDomain: "test.mesh", LongPoll: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	m.cos = append(m.cos, b)
	m.admin = append(m.admin, coordinatortest.NewClient(t, b.AdminDir(), nil))

	_, filesDir := m.joinThrough(0, 0, "files")
	_, ledgerDir := m.joinThrough(0, 0, "ledger")
	filesOnB, ledgerOnB := m.clientOf(filesDir, 1), m.clientOf(ledgerDir, 1)
	if _, code := ship(t, filesOnB, eventsAt(filesID, 0, 5, time.Now())); code != "" {
		t.Fatalf("shipping through B before the partition: %s", code)
	}

	proxy.partition()
	if err := m.admin[0].Call(context.Background(), http.MethodPost, controlapi.PathNodes+"/ledger/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ledgerOnB.Renew(context.Background()); err == nil {
		t.Fatal("a partitioned coordinator renewed the certificate of a node revoked meanwhile")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp controlapi.AuditIngestResponse
	if err := filesOnB.Call(ctx, http.MethodPost, controlapi.PathAudit, eventsAt(filesID, 5, 5, time.Now()), &resp); err == nil {
		t.Fatalf("a partitioned coordinator accepted audit events: %+v", resp)
	}
	// A carries on meanwhile.
	filesOnA := m.clientOf(filesDir, 0)
	if _, code := ship(t, filesOnA, eventsAt(filesID, 10, 5, time.Now())); code != "" {
		t.Fatalf("shipping through A during B's partition: %s", code)
	}

	proxy.heal()
	// The batch B refused is shipped again, as a node's spool would, and
	// now lands once.
	filesOnB = m.clientOf(filesDir, 1)
	if _, code := ship(t, filesOnB, eventsAt(filesID, 5, 5, time.Now())); code != "" {
		t.Fatalf("shipping through B after the partition healed: %s", code)
	}
	if _, err := ledgerOnB.Renew(context.Background()); apiCode(err) != "revoked" {
		t.Fatalf("renewal of the revoked node through healed B: %v, want revoked", err)
	}
	db, err := store.Open(context.Background(), m.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pub := auditKeyOf(t, m)
	rep, err := auditstore.Verify(context.Background(), db, pub)
	if err != nil || !rep.OK {
		t.Fatalf("audit verify after the partition: %v %v", rep, err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM audit_events WHERE dst = $1`, filesID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 15 {
		t.Fatalf("%d of files' events stored, want 15 (each once)", n)
	}
}

// auditKeyOf reads the mesh's audit public key as nodes get it.
func auditKeyOf(t *testing.T, m *sharedMesh) ed25519.PublicKey {
	t.Helper()
	nm := awaitNetmap(t, m.admin[0], func(nm *netmap.Netmap) bool { return nm.AuditKey != "" })
	pub, err := audit.ParsePublicKey([]byte(nm.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
