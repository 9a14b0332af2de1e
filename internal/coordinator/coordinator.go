// Package coordinator is agentmesh's control plane: the mesh certificate
// authority, the node registry, auth keys, the policy store and its
// distribution through the netmap, and the audit store, all behind one
// admin API served over TLS 1.3.
//
// Threat model: anyone on the network may reach the API. Every path but join
// requires a client certificate issued by the mesh CA to a node that is still
// active under the same incarnation; admin paths require kind admin. Join
// requires an auth key whose secret the coordinator holds only as a hash; a
// single-use key is consumed in the same transaction that records the node,
// so it admits exactly one node. The CA key never leaves the data directory
// (mode 0600). Bodies are bounded and decoded strictly. Every admin action
// is written to the audit trail. Nodes may ship only the audit events they
// recorded themselves (auditstore.Store.Ingest); refused attempts are aggregated
// (audit.Refusals) so that a flood cannot bury the trail. The audit signing
// key is kept out of the database's directory (datadir.go). One coordinator
// at a time holds the data directory (an flock, package dirlock), taken
// before anything in it is written: a second one on it would rewrite the
// admin identity's coordinator address and write the same database and
// audit chain; it is refused instead, with the holder named.
//
// Anybody may also try to exhaust the coordinator, and with it the mesh:
// nodes that cannot renew or fetch a netmap stop within one certificate
// lifetime. Everything a client without a certificate can hold is bounded
// (Limits): connections in the TLS handshake and after it without a mesh
// certificate, globally and per source, and in time; header and body read
// times per request; the join body's size; join attempts per source (a
// token bucket) and joins in flight. Connections that present a mesh
// certificate are counted apart, so a flood of anonymous ones cannot crowd
// the nodes out once their handshake is done. Every refusal for a bound is
// audited with a stable reason code.
package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/store"
)

// DefaultListen is where the coordinator listens unless told otherwise:
// loopback, so a first start exposes nothing to the network.
const DefaultListen = "127.0.0.1:7443"

// DefaultTrustDomain names a mesh created without --trust-domain.
const DefaultTrustDomain = "agentmesh.local"

// ServerName is the node name in the coordinator's own certificate. It is
// reserved: no node can join under it.
const ServerName = "coordinator"

// AdminName is the name of the first admin identity, written to DATA/admin.
const AdminName = "admin"

// Config configures a coordinator. The zero value of each field means its
// default.
type Config struct {
	// DataDir holds the CA, the audit signing key, the admin identity and,
	// in its own subdirectory (DatabaseDir), the database. Required. With
	// a shared Database it holds only this coordinator's admin identity
	// and lock: the CA and the audit key are in the database, sealed.
	DataDir string
	// Database is empty for the embedded SQLite database in DataDir, or
	// the postgres:// URL of a PostgreSQL database that several
	// coordinators share (shared.go, cluster.go).
	Database string
	// DatabaseKey seals the CA and audit keys in a shared Database. When
	// it is nil, the key is read from DatabaseKeyFile, or from the
	// environment (sealed.EnvKey) when that is empty too.
	DatabaseKey     *sealed.Key
	DatabaseKeyFile string
	// AdvertiseURL is the API URL nodes are told to reach this
	// coordinator at; empty means https:// and the listen address.
	AdvertiseURL string
	// AuditKeyFile is the audit signing key (created on first start);
	// empty means DataDir/audit.key. It may not lie in the database's
	// directory. See datadir.go for the layout and why.
	AuditKeyFile string
	// Listen is the TCP address to listen on (DefaultListen).
	Listen string
	// TrustDomain is used when DataDir is initialised; later starts keep the
	// one the mesh was created with and refuse a different one.
	TrustDomain string
	// CertTTL is the lifetime of node certificates (pki.DefaultTTL).
	CertTTL time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger receives operational logs (nil: discard).
	Logger *slog.Logger
	// CheckpointEvery is how often the audit head is signed (10s).
	CheckpointEvery time.Duration
	// AuditRetention, when positive, prunes audit events older than this,
	// hourly and at start. Pruning stops at a signed checkpoint and leaves
	// a signed prune point, so 'audit verify' still accepts the trail.
	// Zero keeps everything.
	AuditRetention time.Duration
	// LongPoll is how long a netmap watch waits for a change before it
	// answers "nothing new", which confirms the node's view (25s).
	LongPoll time.Duration
	// Limits bound what clients, above all those without a certificate,
	// can hold of the coordinator (see Limits); zero fields are defaults.
	Limits Limits
	// Alerts, when set, sends alerts to webhooks (alerts.go); nil and an
	// empty AlertsFile send none. AlertsFile is read at start when Alerts
	// is nil (alert.Load).
	Alerts     *alert.Config
	AlertsFile string
	// AlertDelivery overrides how alerts are delivered (tests inject the
	// backoff's clock); its zero fields come from Alerts.Delivery.
	AlertDelivery alert.Options
	// Metrics records joins, renewals, revocations, audit ingest and
	// refusals; nil records nothing. MetricsListener, when set, serves
	// them (see metrics.go); the coordinator owns it from Start on.
	Metrics         *metrics.Set
	MetricsListener net.Listener
	// SSO, when its Issuer is set, signs people in through that OpenID
	// Connect issuer (sso.go); discovery runs at Start. SSOAdminGroups are
	// the issuer's groups whose members have admin rights.
	SSO            sso.Config
	SSOAdminGroups []string
}

// Coordinator is a running control plane. Close stops it.
type Coordinator struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	td       identity.TrustDomain
	ca       *pki.CA
	verifier *pki.Verifier
	sso      *sso.Verifier // nil: no OpenID Connect issuer (sso.go)
	db       *store.DB
	reg      *registry
	audit    *auditstore.Store
	auditPub ed25519.PublicKey
	// refusals aggregates refused handshakes, requests and joins.
	refusals *audit.Refusals
	ln       net.Listener
	limiter  *connlimit.Listener
	limits   Limits
	url      string
	// stopServe ends the API server, and served is closed once it has
	// stopped (nil before it starts).
	stopServe context.CancelFunc
	served    chan struct{}

	joinRate  *connlimit.RateLimiter
	joinSlots chan struct{} // one token per join being read or handled

	serverCert atomic.Pointer[tls.Certificate]

	// pubMu makes publishes one at a time (see publish); published is the
	// registry change count the current netmap includes.
	pubMu     sync.Mutex
	published uint64

	mu      sync.Mutex
	current *netmap.Netmap // the whole mesh; each node gets viewFor's part
	pol     *policy.Policy // current.Policy compiled (nil: none, or broken)
	changed chan struct{}  // closed and replaced on every publish
	index   *meshIndex     // of current: set by publish, or by the first view
	deleg   *delegView     // of current: set by publish (delegation.go)

	projections projectionCache
	// shadowPol is current.Shadow compiled (nil: none, or broken), with
	// its own projections (shadow.go).
	shadowPol         *policy.Policy
	shadowProjections projectionCache

	cluster *cluster // this coordinator's part in a cluster (cluster.go)
	alerts  *alerter // nil: no alerts configured (alerts.go)
	// approvals wakes approval long polls (approvals.go).
	approvals approvalBoard

	// readiness makes /readyz's database checks one at a time.
	readiness sync.Mutex

	// lock keeps other processes out of the data directory from before
	// anything in it is written until Close.
	lock *dirlock.Lock

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// Start initialises or loads cfg.DataDir, listens, and serves until Close.
func Start(ctx context.Context, cfg Config) (c *Coordinator, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("no data directory given (--data DIR)")
	}
	if cfg.TrustDomain != "" {
		if _, err := identity.ParseTrustDomain(cfg.TrustDomain); err != nil {
			return nil, fmt.Errorf("%w: want a DNS-style name of lower-case letters, digits, hyphens and dots, such as example.org", err)
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.CertTTL == 0 {
		cfg.CertTTL = pki.DefaultTTL
	}
	if cfg.CertTTL < pki.MinTTL || cfg.CertTTL > pki.MaxTTL {
		return nil, fmt.Errorf("certificate lifetime %v is outside %v..%v", cfg.CertTTL, pki.MinTTL, pki.MaxTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LongPoll <= 0 {
		cfg.LongPoll = longPoll
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = 10 * time.Second
	}
	if cfg.Alerts == nil && cfg.AlertsFile != "" {
		a, err := alert.Load(cfg.AlertsFile)
		if err != nil {
			return nil, err
		}
		cfg.Alerts = a
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limits := cfg.Limits.withDefaults()
	c = &Coordinator{cfg: cfg, log: log, now: cfg.Now, changed: make(chan struct{}), limits: limits,
		joinRate:  connlimit.NewRateLimiter(limits.JoinRate, limits.JoinBurst, 0, cfg.Now),
		joinSlots: make(chan struct{}, limits.MaxJoinsInFlight)}
	// "return nil, err" has already set c to nil when this runs.
	started := c
	defer func() {
		if err != nil {
			started.Close()
			c = nil
		}
	}()
	// Nothing in the data directory is written before it is locked, and
	// nothing but the lock before the address is known to be free, so a
	// coordinator that cannot start leaves the directory as it was (and
	// one that finds it in use leaves the admin state to its holder).
	if err := c.startSSO(ctx); err != nil {
		return nil, err
	}
	if err := c.lockData(); err != nil {
		return nil, err
	}
	ln, err := httpserver.Listen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	c.ln = ln
	if err := c.lock.SetListen(ln.Addr().String()); err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := c.openData(ctx); err != nil {
		return nil, err
	}
	connCfg := limits.Conn
	connCfg.OnRefuse = c.refuseConn
	c.limiter = connlimit.NewListener(ln, connCfg)
	c.url = "https://" + ln.Addr().String()
	if err := c.issueServerCert(); err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	if err := c.joinCluster(ctx); err != nil {
		return nil, err
	}
	if cfg.Alerts != nil {
		c.alerts = c.newAlerter(cfg.Alerts, cfg.AlertDelivery)
	}
	if err := c.writeAdminIdentity(ctx); err != nil {
		return nil, fmt.Errorf("admin identity: %w", err)
	}
	if err := c.publish(ctx); err != nil {
		return nil, fmt.Errorf("netmap: %w", err)
	}
	if cfg.AuditRetention > 0 {
		c.prune(ctx)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	srv := &http.Server{
		Handler: c.routes(),
		// Headers must arrive in time; bodies get a deadline per request
		// (readBody), so that the netmap long poll, which has none, is
		// never cut off. No ReadTimeout: it would span the long poll.
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 100},
	}
	tlsLn := tls.NewListener(c.limiter, c.limiter.ServerTLS(c.tlsConfig(), c.presentsMeshCertificate))
	// The server stops before the loops below (Close waits for it first):
	// requests finishing in the grace period may still record refusals
	// and audit events.
	serveCtx, stopServe := context.WithCancel(context.Background())
	c.stopServe, c.served = stopServe, make(chan struct{})
	go func() {
		defer close(c.served)
		if err := httpserver.Run(serveCtx, srv, tlsLn); err != nil {
			log.Error("coordinator: serve", "err", err)
		}
	}()
	c.startCluster(runCtx)
	if c.alerts != nil {
		c.wg.Go(func() { c.alerts.run(runCtx) })
	}
	c.serveMetrics(runCtx)
	c.wg.Add(4)
	go func() {
		defer c.wg.Done()
		if err := c.refusals.Run(runCtx); err != nil {
			log.Error("coordinator: writing aggregated refusals", "err", err)
		}
	}()
	go func() {
		defer c.wg.Done()
		c.renewLoop(runCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.pruneLoop(runCtx)
	}()
	go func() {
		defer c.wg.Done()
		if err := c.audit.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("coordinator: audit checkpoints", "err", err)
		}
	}()
	return c, nil
}

// pruneLoop applies the audit retention setting every hour; Start has
// already applied it once.
func (c *Coordinator) pruneLoop(ctx context.Context) {
	if c.cfg.AuditRetention <= 0 {
		return
	}
	for {
		t := time.NewTimer(time.Hour)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.prune(ctx)
	}
}

func (c *Coordinator) prune(ctx context.Context) {
	n, err := c.audit.Prune(ctx, c.now().Add(-c.cfg.AuditRetention))
	if err != nil {
		c.log.Error("coordinator: audit retention", "err", err)
	} else if n > 0 {
		c.log.Info("coordinator: pruned audit events past retention", "events", n)
	}
}

// URL is the coordinator's API base URL, such as https://127.0.0.1:7443.
func (c *Coordinator) URL() string { return c.url }

// Addr is the address the coordinator listens on.
func (c *Coordinator) Addr() net.Addr { return c.ln.Addr() }

// CAFingerprint is the SHA-256 fingerprint of the mesh CA, as auth keys pin it.
func (c *Coordinator) CAFingerprint() string { return c.ca.Fingerprint() }

// AuditKeyFingerprint is the SHA-256 fingerprint of the audit signing key's
// public key, as audit verify reports it (audit.Report.Key).
func (c *Coordinator) AuditKeyFingerprint() string { return audit.KeyFingerprint(c.auditPub) }

// TrustDomain is the mesh's trust domain.
func (c *Coordinator) TrustDomain() identity.TrustDomain { return c.td }

// AdminDir is the state directory of the first admin identity.
func (c *Coordinator) AdminDir() string {
	return filepath.Join(c.cfg.DataDir, nodestate.CoordinatorAdminDir)
}

// AuditAppended returns a channel closed the next time events are stored in
// the audit trail (shipped by a node or recorded here).
func (c *Coordinator) AuditAppended() <-chan struct{} { return c.audit.Appended() }

// Netmap returns the current netmap of the whole mesh, as the coordinator
// holds it; nodes only ever receive their own view of it.
func (c *Coordinator) Netmap() *netmap.Netmap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Close stops serving, waits for everything Start began, and closes the
// database. It is safe to call more than once.
func (c *Coordinator) Close() error {
	c.closed.Do(func() {
		if c.stopServe != nil {
			// Long polls end at once (httpserver.Run ends every request's
			// context first), so Close does not wait one out.
			c.stopServe()
			<-c.served
		} else if c.limiter != nil {
			c.limiter.Close()
		} else if c.ln != nil {
			c.ln.Close()
		}
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		if c.audit != nil {
			if err := c.audit.Checkpoint(context.Background()); err != nil {
				c.log.Warn("coordinator: final audit checkpoint", "err", err)
			}
		}
		c.leaveCluster()
		if c.db != nil {
			c.db.Close()
		}
		// Last: until here this coordinator may still write the directory.
		c.lock.Close()
	})
	return nil
}

// openData initialises the locked data directory and the database on
// first start and loads them after.
func (c *Coordinator) openData(ctx context.Context) error {
	dir := c.cfg.DataDir
	shared := store.IsPostgres(c.cfg.Database)
	if shared && c.cfg.DatabaseKey == nil {
		key, err := sealed.Load(c.cfg.DatabaseKeyFile)
		if err != nil {
			return err
		}
		c.cfg.DatabaseKey = key
	}
	db, err := openDatabase(ctx, dir, c.cfg.Database, c.log)
	if err != nil {
		return err
	}
	c.db = db
	reg, err := newRegistry(ctx, db)
	if err != nil {
		return err
	}
	c.reg = reg
	td, err := c.trustDomain(ctx)
	if err != nil {
		return err
	}
	c.td = td
	if err := reg.open(ctx, td, c.now()); err != nil {
		return err
	}
	var signer ed25519.PrivateKey
	if shared {
		signer, err = c.sharedKeys(ctx)
	} else {
		signer, err = c.fileKeys()
	}
	if err != nil {
		return err
	}
	c.verifier = pki.NewVerifier(td, []*x509.Certificate{c.ca.Certificate()}, c.now)
	c.auditPub = signer.Public().(ed25519.PublicKey)
	self, err := identity.New(td, identity.KindAdmin, ServerName)
	if err != nil {
		return err
	}
	as, err := auditstore.New(ctx, db, signer, auditstore.Options{CheckpointEvery: c.cfg.CheckpointEvery, Now: c.now, Logger: c.log, Self: self.String()})
	if err != nil {
		return err
	}
	c.audit = as
	c.refusals = audit.NewRefusals(audit.RefusalOptions{Record: c.appendEvent, Now: c.now, Logger: c.log, Observe: c.cfg.Metrics.Refused})
	return nil
}

// fileKeys loads the CA and the audit key from the data directory's files,
// creating them on first start.
func (c *Coordinator) fileKeys() (ed25519.PrivateKey, error) {
	dir := c.cfg.DataDir
	_, statErr := os.Stat(filepath.Join(dir, "ca.crt"))
	switch {
	case statErr == nil:
		ca, err := pki.LoadCA(dir)
		if err != nil {
			return nil, err
		}
		c.ca = ca
	case errors.Is(statErr, os.ErrNotExist):
		ca, err := pki.NewCA(c.td, c.now())
		if err != nil {
			return nil, err
		}
		if err := ca.Save(dir); err != nil {
			return nil, err
		}
		c.ca = ca
	default:
		return nil, statErr
	}
	keyPath, err := c.auditKeyPath()
	if err != nil {
		return nil, err
	}
	return loadOrCreateAuditKey(keyPath, !hasCheckpoints(c.db))
}

// sharedKeys loads the CA and the audit key sealed in the shared
// database, the first coordinator creating them (shared.go).
func (c *Coordinator) sharedKeys(ctx context.Context) (ed25519.PrivateKey, error) {
	if c.cfg.AuditKeyFile != "" {
		return nil, errors.New("--audit-key does not apply to a shared database: the audit key is sealed in the database with the database key")
	}
	if err := store.Migrate(ctx, c.db, "secrets", secretsMigrations); err != nil {
		return nil, err
	}
	ca, err := sharedCA(ctx, c.db, c.cfg.DatabaseKey, c.td, c.now())
	if err != nil {
		return nil, err
	}
	c.ca = ca
	return sharedAuditKey(ctx, c.db, c.cfg.DatabaseKey, c.now(), !hasCheckpoints(c.db))
}

// trustDomain returns the stored trust domain, storing the configured one
// (or the default) on first start.
func (c *Coordinator) trustDomain(ctx context.Context) (identity.TrustDomain, error) {
	want := c.cfg.TrustDomain
	if want == "" {
		want = DefaultTrustDomain
	}
	// The first start stores it; on a shared database coordinators
	// starting at once may both try, and the first one's stays.
	if _, err := c.db.ExecContext(ctx, `INSERT INTO meta(k, v) VALUES('trust_domain', $1) ON CONFLICT(k) DO NOTHING`, want); err != nil {
		return "", err
	}
	var stored string
	if err := c.db.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'trust_domain'`).Scan(&stored); err != nil {
		return "", err
	}
	if c.cfg.TrustDomain != "" && c.cfg.TrustDomain != stored {
		return "", fmt.Errorf("this mesh's trust domain is %q; it cannot be changed to %q", stored, c.cfg.TrustDomain)
	}
	return identity.ParseTrustDomain(stored)
}

// presentsMeshCertificate sorts a connection into connlimit's
// authenticated budget: its client certificate chains to the mesh CA and
// is valid now. Whether the node is still active is checked per request
// (authenticate); here it only has to be one of the mesh's certificates,
// which nobody without a node key holds.
func (c *Coordinator) presentsMeshCertificate(cs tls.ConnectionState) bool {
	if len(cs.PeerCertificates) == 0 {
		return false
	}
	_, err := c.verifier.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
	if err != nil && c.sso != nil {
		_, err = c.verifier.VerifyUser(cs.PeerCertificates)
	}
	return err == nil
}

func (c *Coordinator) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Join has no certificate yet, so certificates are requested, not
		// required; every other handler refuses a request without one.
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.serverCert.Load(), nil
		},
		NextProtos: []string{"h2", "http/1.1"},
		// Every handshake refused for its version is a connection attempt
		// the audit trail must account for (aggregated per source); the other refusals (no, foreign,
		// expired or revoked certificates) happen per request, in node,
		// which records them.
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
				return nil, nil
			}
			ev := c.event(audit.KindConnection, "", "coordinator")
			if hello.Conn != nil && hello.Conn.RemoteAddr() != nil {
				ev.SrcAddr = hello.Conn.RemoteAddr().String()
			}
			ev.Decision, ev.Reason, ev.Outcome = audit.Deny, reason.TLSVersion, audit.OutcomeRefused
			ev.Detail = "client offers only TLS versions older than 1.3"
			c.refuse(hello.Context(), ev)
			return nil, nil // MinVersion makes the stack refuse it
		},
	}
}
