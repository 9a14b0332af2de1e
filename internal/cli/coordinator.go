package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/agentmesh/agentmesh/internal/engine"
)

func init() {
	register(&command{
		name:  "coordinator",
		usage: "--data DIR [--db postgres://...] [--database-key FILE] [--listen ADDR] [--advertise URL] [--trust-domain NAME] [--join-rate N] [--join-burst N] [--cert-ttl DURATION] [--audit-retention DURATION] [--audit-key FILE] [--alerts FILE] [--ready-fd N] " + metricsUsage + " [--sso-issuer URL --sso-client-id ID [--sso-groups-claim NAME] [--sso-admin-group GROUP[,GROUP...]] [--sso-clock-skew DURATION] [--sso-email-claim NAME]] | keygen|backup|restore|migrate ...",
		short: "run the control plane: CA, registry, auth keys, policy store, audit store",
		long: `The first start initialises DIR (CA key and certificate, audit signing key, a first admin
identity in DIR/admin, and the SQLite database in DIR/db). Later starts reuse it. The API is
served over TLS 1.3 only, on loopback unless --listen says otherwise. Ctrl-C stops it cleanly.
DIR is locked while the coordinator runs: a second coordinator on it is refused and told which
process holds it (DIR/lock records its pid, listen address and start time).

The database has a directory of its own so that whoever may write it (a backup, a replica, a
database tool) does not also find the audit signing key beside it; --audit-key keeps the key
somewhere else altogether. A data directory from an earlier version (DIR/mesh.db) is moved into
DIR/db at start.

With --db postgres://USER@HOST/DB, the state lives in PostgreSQL instead, and several
coordinators may share it: any of them answers any request, changes made on one reach the nodes
of the others within a second, and nodes fail over between them (README, "High availability").
The CA and audit signing keys are then kept in the database, sealed with the database key:
make one with 'agentmesh coordinator keygen > db.key' (mode 600), give the same key to every
coordinator with --database-key FILE or the AGENTMESH_DATABASE_KEY variable, and keep it apart
from the database's backups: the database alone cannot mint a certificate. DIR then holds only
this coordinator's admin identity and lock. --advertise is the URL nodes reach this coordinator
at, when it is not https://LISTEN-ADDRESS.

GET /healthz answers while the process serves; GET /readyz answers 200 only while the database
answers and its schema is current (503 with the reason otherwise). Neither needs a certificate.

With --alerts FILE (HuJSON), the coordinator sends signed webhooks on denial bursts, newly refused
identities, nodes that fail to renew, backed-up spools and audit verify findings; each delivery is
audited (README, "Alerts"). A file with an error stops the start, with the line named.

With --sso-issuer URL and --sso-client-id ID, people sign in through that OpenID Connect issuer
('agentmesh login', 'agentmesh join --sso'; README, "People: single sign-on"). Discovery runs at
start: an issuer that does not answer stops the start. --sso-admin-group names the issuer's groups
(from the --sso-groups-claim claim) whose members may run admin commands with their login state.

With --ready-fd N, the API is announced as one JSON line on file descriptor N once it serves.
With --ready-fd N, the API is announced as one JSON line on file descriptor N once it serves
(and the metrics endpoint as a second line, api "metrics").

With --metrics ADDR, Prometheus metrics are served at http://ADDR/metrics (README, "Metrics"):
on loopback only, unless --metrics-allow-remote allows another address; never on the mesh listener.

Examples:
  agentmesh coordinator --data ./mesh
  agentmesh coordinator --data ./mesh --listen 10.0.0.5:7443 --cert-ttl 30m
  agentmesh coordinator --data /var/lib/agentmesh --audit-key /etc/agentmesh/audit.key
  agentmesh coordinator --data ./mesh --alerts alerts.hujson
  agentmesh coordinator keygen > db.key && chmod 600 db.key
  agentmesh coordinator --data ./c1 --db postgres://mesh@db.internal/mesh --database-key db.key

backup, restore and migrate copy the database: a snapshot to a file while the coordinator runs,
that file back into an empty database, or an SQLite data directory into PostgreSQL (each has
--help; on SQLite the key files stay out of backups and are backed up apart).`,
		run: runCoordinator,
	})
}

func runCoordinator(ctx context.Context, env Env, args []string) error {
	if len(args) > 0 && args[0] == "keygen" {
		if len(args) > 1 {
			return usagef("keygen takes no arguments; it writes the key to standard output")
		}
		key, err := engine.NewDatabaseKey()
		if err != nil {
			return err
		}
		_, err = env.Stdout.Write(key)
		return err
	}
	c := commands["coordinator"]
	if len(args) > 0 {
		if v := coordinatorVerb(args[0]); v != nil {
			return v.run(ctx, env, c, args[1:])
		}
	}
	fs := newFlags(c, env)
	data := fs.String("data", "", "data `DIR` (created on first start)")
	db := fs.String("db", "", "PostgreSQL `URL` shared by several coordinators (default: SQLite in DIR/db)")
	dbKey := fs.String("database-key", "", "`FILE` holding the key that seals the CA and audit keys in a --db database (or set AGENTMESH_DATABASE_KEY)")
	advertise := fs.String("advertise", "", "`URL` nodes reach this coordinator at (default https://LISTEN-ADDRESS)")
	listen := fs.String("listen", engine.DefaultCoordinatorListen, "`ADDR` to listen on")
	td := fs.String("trust-domain", "", "trust `NAME` of a new mesh (default "+engine.DefaultTrustDomain+")")
	ttl := fs.Duration("cert-ttl", 0, "node certificate lifetime, 5m to 24h (default 1h)")
	retention := fs.Duration("audit-retention", 0, "prune audit events older than this `DURATION` (0: keep everything); verification still passes")
	auditKey := fs.String("audit-key", "", "audit signing key `FILE`, created on first start (default DIR/audit.key; never inside DIR/db)")
	alerts := fs.String("alerts", "", "alerts `FILE` (HuJSON): webhooks, the alert kinds each gets, thresholds (README, \"Alerts\")")
	joinRate := fs.Float64("join-rate", 0, "join attempts per second each source address gets back (default 1; raise it for many nodes behind one address)")
	joinBurst := fs.Int("join-burst", 0, "join attempts one source address may make at once (default 20)")
	ssoIssuer := fs.String("sso-issuer", "", "OpenID Connect issuer `URL` people sign in with (README, \"People: single sign-on\")")
	ssoClient := fs.String("sso-client-id", "", "the `ID` of agentmesh's client at the issuer: the audience of ID tokens")
	ssoGroups := fs.String("sso-groups-claim", "groups", "the ID token `CLAIM` listing a person's groups")
	ssoAdmins := fs.String("sso-admin-group", "", "comma-separated issuer `GROUPS` whose members have admin rights")
	ssoSkew := fs.Duration("sso-clock-skew", 0, "clock skew allowed with the issuer, at most 10m (default 2m)")
	ssoEmail := fs.String("sso-email-claim", "", "the ID token `CLAIM` holding a person's address, trusted without email_verified, for issuers that do not send it (default: email, verified)")
	verbose := fs.Bool("v", false, "log requests and background work to stderr")
	readyFD := readyFlag(fs)
	mc := metricsFlags(fs)
	if _, _, err := parse(fs, args); err != nil {
		return err
	}
	if *data == "" {
		return usagef("--data DIR is required")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	announce, closeReady, err := readySignal(env, *readyFD)
	if err != nil {
		return err
	}
	defer closeReady()
	var admins []string
	if *ssoAdmins != "" {
		for _, g := range strings.Split(*ssoAdmins, ",") {
			admins = append(admins, strings.TrimSpace(g))
		}
	}
	if *ssoIssuer == "" && *ssoClient != "" {
		return usagef("--sso-client-id needs --sso-issuer")
	}
	co, err := engine.StartCoordinatorWithMetrics(ctx, engine.CoordinatorConfig{
		SSO:            engine.SSOConfig{Issuer: *ssoIssuer, ClientID: *ssoClient, GroupsClaim: *ssoGroups, Skew: *ssoSkew, EmailClaim: *ssoEmail},
		SSOAdminGroups: admins, DataDir: *data, Database: *db, DatabaseKeyFile: *dbKey,
		AdvertiseURL: *advertise, Limits: engine.CoordinatorLimits{JoinRate: *joinRate, JoinBurst: *joinBurst}, Listen: *listen, TrustDomain: *td, CertTTL: *ttl, Logger: log, AuditRetention: *retention, AuditKeyFile: *auditKey, AlertsFile: *alerts}, *mc)
	if err != nil {
		return err
	}
	defer co.Close()
	fmt.Fprintf(env.Stdout, "coordinator listening on %s\n", co.URL())
	fmt.Fprintf(env.Stdout, "database:        %s\n", co.DatabaseName())
	fmt.Fprintf(env.Stdout, "trust domain:    %s\n", co.TrustDomain())
	fmt.Fprintf(env.Stdout, "CA fingerprint:  sha256:%s\n", co.CAFingerprint())
	fmt.Fprintf(env.Stdout, "audit key:       sha256:%s (write it down: audit verify names the key it checked with)\n", co.AuditKeyFingerprint())
	if rs := co.AlertReceivers(); len(rs) > 0 {
		fmt.Fprintf(env.Stdout, "alerts to:       %s\n", strings.Join(rs, ", "))
	}
	ms, hasMetrics := engine.MetricsServing(co)
	if hasMetrics {
		fmt.Fprintf(env.Stdout, "metrics:         %s\n", ms.URL)
	}
	fmt.Fprintf(env.Stdout, "admin identity:  %s (use --state %s, or export AGENTMESH_STATE=%s)\n", co.AdminDir(), co.AdminDir(), co.AdminDir())
	fmt.Fprintf(env.Stdout, "next: agentmesh keys create --kind agent --state %s\n", co.AdminDir())
	announce(engine.CoordinatorServing(co))
	if hasMetrics {
		announce(ms)
	}
	<-ctx.Done()
	fmt.Fprintln(env.Stderr, "coordinator: shutting down")
	return nil
}
