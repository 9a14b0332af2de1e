package cli

import (
	"context"
	"fmt"
	"log/slog"

	"agentmesh/internal/coordinator"
)

func init() {
	register(&command{
		name:  "coordinator",
		usage: "--data DIR [--listen ADDR] [--trust-domain NAME] [--cert-ttl DURATION] [--audit-retention DURATION]",
		short: "run the control plane: CA, registry, auth keys, policy store, audit store",
		long: `The first start initialises DIR (CA key and certificate, SQLite database, audit signing
key, and a first admin identity in DIR/admin). Later starts reuse it. The API is served over
TLS 1.3 only, on loopback unless --listen says otherwise. Ctrl-C stops it cleanly.

Examples:
  agentmesh coordinator --data ./mesh
  agentmesh coordinator --data ./mesh --listen 10.0.0.5:7443 --cert-ttl 30m`,
		run: runCoordinator,
	})
}

func runCoordinator(ctx context.Context, env Env, args []string) error {
	c := commands["coordinator"]
	fs := newFlags(c, env)
	data := fs.String("data", "", "data `DIR` (created on first start)")
	listen := fs.String("listen", coordinator.DefaultListen, "`ADDR` to listen on")
	td := fs.String("trust-domain", "", "trust `NAME` of a new mesh (default "+coordinator.DefaultTrustDomain+")")
	ttl := fs.Duration("cert-ttl", 0, "node certificate lifetime, 5m to 24h (default 1h)")
	retention := fs.Duration("audit-retention", 0, "prune audit events older than this `DURATION` (0: keep everything); verification still passes")
	verbose := fs.Bool("v", false, "log requests and background work to stderr")
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
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: *data, Listen: *listen, TrustDomain: *td, CertTTL: *ttl, Logger: log, AuditRetention: *retention})
	if err != nil {
		return err
	}
	defer co.Close()
	fmt.Fprintf(env.Stdout, "coordinator listening on %s\n", co.URL())
	fmt.Fprintf(env.Stdout, "trust domain:    %s\n", co.TrustDomain())
	fmt.Fprintf(env.Stdout, "CA fingerprint:  sha256:%s\n", co.CAFingerprint())
	fmt.Fprintf(env.Stdout, "admin identity:  %s (use --state %s, or export AGENTMESH_STATE=%s)\n", co.AdminDir(), co.AdminDir(), co.AdminDir())
	fmt.Fprintf(env.Stdout, "next: agentmesh keys create --kind agent --state %s\n", co.AdminDir())
	<-ctx.Done()
	fmt.Fprintln(env.Stderr, "coordinator: shutting down")
	return nil
}
