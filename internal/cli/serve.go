package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"agentmesh/internal/admission"
	"agentmesh/internal/audit"
	"agentmesh/internal/backoff"
	"agentmesh/internal/budget"
	"agentmesh/internal/gateway"
	"agentmesh/internal/identity"
	"agentmesh/internal/mcpwire"
	"agentmesh/internal/modelgw"
	"agentmesh/internal/node"
	"agentmesh/internal/pki"
	"agentmesh/internal/reason"
	"agentmesh/internal/tailnet"
)

// DefaultServeListen is where a gateway listens unless told otherwise:
// loopback on a free port, so nothing is exposed by surprise. Pass
// --listen 0.0.0.0:7800 (or a host address) to serve other hosts.
const DefaultServeListen = "127.0.0.1:0"

func init() {
	register(&command{
		name:  "serve",
		usage: "--state DIR [--listen ADDR] [--advertise ADDR] [--tailnet [--ts-*] [--tailnet-policy agentmesh|tailnet]] (--upstream URL | -- COMMAND [ARGS...])",
		short: "run the gateway of a tool or model node: mTLS in, policy per message, audit, forward upstream",
		long: `Serves MCP at https://ADDR/mcp over TLS 1.3; every client needs a certificate from the mesh CA,
an active node record, and a grant to this node. The upstream is a Streamable HTTP MCP server
(--upstream) or a stdio MCP server command after "--" (one process per client session).
The address is registered with the coordinator so that connectors find it by name.

Examples:
  agentmesh serve --state ./payments -- npx @modelcontextprotocol/server-postgres postgres://localhost/db
  agentmesh serve --state ./files --listen 0.0.0.0:7800 --advertise files.internal:7800 -- mcp-server-filesystem /srv
  agentmesh serve --state ./tools --upstream http://127.0.0.1:8080/mcp

A node of kind model serves an OpenAI-compatible API instead: --upstream is its base URL
(such as http://127.0.0.1:8000; a stdio command is a usage error), clients reach it through
'agentmesh connect model:NAME --listen 127.0.0.1:PORT', and limit counters are kept in DIR:
  agentmesh serve --state ./llm --upstream http://127.0.0.1:8000

With --tailnet the gateway also joins a tailnet (Tailscale, or Headscale with --ts-control-url)
as its own node, with tsnet (userspace, no root), and serves at http://NAME:PORT/mcp there:
WireGuard encrypts, each caller is identified with WhoIs, and the same per-message policy and
audit apply. The mTLS listener then runs only if --listen is given. Tool rules for tailnet
callers come from this mesh's policy (selectors agent:NODE, tag:TAG, user:LOGIN; the default)
or, with --tailnet-policy tailnet, from the tailnet policy file's grants of the app capability
agentmesh.dev/cap/mcp. The auth key comes from $TS_AUTHKEY (or --ts-authkey):
  TS_AUTHKEY=tskey-auth-... agentmesh serve --state ./tools --tailnet --tailnet-policy tailnet --upstream http://127.0.0.1:8080/mcp`,
		run: runServe,
	})
}

func runServe(ctx context.Context, env Env, args []string) error {
	c := commands["serve"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	listen := fs.String("listen", DefaultServeListen, "`ADDR` to listen on")
	advertise := fs.String("advertise", "", "`HOST:PORT` registered for connectors (default: the listen address)")
	upstreamURL := fs.String("upstream", "", "Streamable HTTP MCP server `URL` (for a model node: the OpenAI-compatible API's base URL)")
	maxBytes := fs.Int("max-message-bytes", 4<<20, "largest JSON-RPC message accepted from a client")
	argsHash := fs.Bool("record-args-hash", false, "store the SHA-256 of tool call arguments in audit events")
	var caps serveCaps
	fs.IntVar(&caps.requestsPerPeer, "max-requests-per-peer", gateway.DefaultMaxRequestsPerPeer, "at most `N` requests in flight per client at once, open streams included")
	fs.IntVar(&caps.sessionsPerPeer, "max-sessions-per-peer", gateway.DefaultMaxSessionsPerPeer, "at most `N` open MCP sessions per client at once")
	fs.IntVar(&caps.processesPerPeer, "max-processes-per-peer", gateway.DefaultMaxProcessesPerPeer, "at most `N` stdio upstream processes per client at once")
	fs.IntVar(&caps.processes, "max-processes", gateway.DefaultMaxProcesses, "at most `N` stdio upstream processes for all clients together")
	fs.Int64Var(&caps.bodies.Total, "body-budget", 0, "`BYTES` of request bodies held in memory at once, all clients together (default 64 × --max-message-bytes)")
	fs.Int64Var(&caps.bodies.PerPeer, "body-budget-per-peer", 0, "`BYTES` of request bodies one client may have in memory at once (default 16 × --max-message-bytes)")
	fs.DurationVar(&caps.bodies.Timeout, "body-timeout", budget.DefaultBodyTimeout, "a request body must arrive whole within `DURATION`")
	verbose := fs.Bool("v", false, "log to stderr at debug level")
	tf := addTailnetFlags(fs, true)
	pos, rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (put the upstream command after --)", pos[0])
	}
	if (*upstreamURL == "") == (len(rest) == 0) {
		return usagef("give exactly one upstream: --upstream URL or -- COMMAND [ARGS...]")
	}
	if err := tf.check(fs); err != nil {
		return err
	}
	if err := needState(*state); err != nil {
		return err
	}
	log := newLogger(env, *verbose)
	var up gateway.Upstream = gateway.CommandUpstream{Argv: rest, Stderr: &logWriter{log: log, prefix: "upstream"}}
	if *upstreamURL != "" {
		up = gateway.HTTPUpstream{URL: *upstreamURL}
	}
	sc := serveConfig{state: *state, listen: *listen, advertise: *advertise, upstream: up,
		limits: mcpwire.Limits{MaxBytes: *maxBytes}, argsHash: *argsHash, log: log, modelUpstream: *upstreamURL, caps: caps}
	if *tf.on {
		sc.tailnet = tf
		if !flagGiven(fs, "listen") {
			sc.listen = "" // tailnet only, unless an mTLS listener is asked for
		}
	}
	return serve(ctx, env, sc)
}

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

type serveConfig struct {
	// listen is the mTLS listener's address; "" runs none (tailnet only).
	state, listen, advertise string
	upstream                 gateway.Upstream
	limits                   mcpwire.Limits
	argsHash                 bool
	log                      *slog.Logger
	// ready, when set, receives the mTLS listener's address once it serves.
	ready func(addr string)
	// modelUpstream is the --upstream URL, used as the model API's base
	// URL when the node is of kind model ("" with a stdio command).
	modelUpstream string
	// tailnet, when set, also serves on a tailnet (Tailscale mode).
	tailnet *tailnetFlags
	// caps bound what clients can make the gateway hold; zero values are
	// the gateways' defaults.
	caps serveCaps
}

// serveCaps are the serve flags that bound what clients can make a
// gateway hold: see gateway.Config and package budget.
type serveCaps struct {
	requestsPerPeer, sessionsPerPeer, processesPerPeer, processes int
	bodies                                                        budget.Bodies
}

// frontend is one listener's gateway: the MCP gateway of a tool node or the
// model gateway of a model node, with TLS or with a tailnet Identifier.
type frontend interface {
	Update(*admission.State)
	Recheck(context.Context)
	Serve(context.Context, net.Listener) error
}

var (
	_ frontend = (*gateway.Gateway)(nil)
	_ frontend = (*modelgw.Gateway)(nil)
)

// serve runs a node's gateways until ctx ends: on the mTLS listener, on the
// tailnet, or both. Every one enforces the node's current view.
func serve(ctx context.Context, env Env, sc serveConfig) error {
	log := sc.log
	var (
		mu     sync.Mutex
		fronts []frontend
		latest *node.View
		self   identity.ID
	)
	n, err := node.Start(ctx, sc.state, node.Options{Logger: log, Audit: true, OnView: func(v node.View) {
		mu.Lock()
		defer mu.Unlock()
		latest = &v
		for _, f := range fronts {
			f.Update(admission.NewState(self, v.Netmap, v.Policy, v.Stale))
		}
	}})
	if err != nil {
		return err
	}
	defer n.Close()
	if !n.ID().Kind.Serves() {
		return fmt.Errorf("this node is a %s; only tool and model nodes serve (join with a key of kind tool or model)", n.ID().Kind)
	}
	mu.Lock()
	self = n.ID()
	mu.Unlock()
	if self.Kind == identity.KindModel && sc.modelUpstream == "" {
		return usagef("a model node serves an OpenAI-compatible HTTP API: give --upstream http://HOST:PORT (a stdio command makes no sense for a model)")
	}
	// newFrontend makes a gateway for one listener and hands it the current
	// view before it serves anything.
	newFrontend := func(tlsCfg *tls.Config, ident admission.Identifier, limitsDir string) (frontend, error) {
		var f frontend
		var err error
		if self.Kind == identity.KindModel {
			f, err = modelgw.New(modelgw.Config{TLS: tlsCfg, Identifier: ident, Upstream: sc.modelUpstream, Audit: n, Refusals: n.Refusals,
				StateDir: limitsDir, MaxBodyBytes: int64(sc.limits.MaxBytes), Bodies: sc.caps.bodies,
				MaxRequestsPerPeer: sc.caps.requestsPerPeer, Logger: log}, nil)
		} else {
			f, err = gateway.New(gateway.Config{TLS: tlsCfg, Identifier: ident, Upstream: sc.upstream, Audit: n, Refusals: n.Refusals,
				Limits: sc.limits, Logger: log, RecordArgsHash: sc.argsHash,
				MaxRequestsPerPeer: sc.caps.requestsPerPeer, MaxSessionsPerPeer: sc.caps.sessionsPerPeer,
				MaxProcessesPerPeer: sc.caps.processesPerPeer,
				MaxProcesses:        sc.caps.processes, Bodies: sc.caps.bodies}, nil)
		}
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		fronts = append(fronts, f)
		if latest != nil {
			f.Update(admission.NewState(self, latest.Netmap, latest.Policy, latest.Stale))
		}
		return f, nil
	}
	what, path, note := "MCP", "/mcp", ""
	if self.Kind == identity.KindModel {
		what, path, note = "the model API", "/v1", " (upstream "+sc.modelUpstream+")"
	}

	var tasks []func(context.Context) error
	if sc.listen != "" {
		f, err := newFrontend(serverTLS(n, self, log), nil, sc.state)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", sc.listen)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		addr := ln.Addr().String()
		adv := sc.advertise
		if adv == "" {
			adv = addr
		}
		tasks = append(tasks,
			func(ctx context.Context) error { registerAddr(ctx, n, adv, log); return nil },
			func(ctx context.Context) error { return f.Serve(ctx, ln) })
		fmt.Fprintf(env.Stdout, "gateway %s serving %s at https://%s%s%s\n", self, what, addr, path, note)
		if sc.ready != nil {
			sc.ready(addr)
		}
	}
	if sc.tailnet != nil {
		tn, o, err := sc.tailnet.join(ctx, env, sc.state, self.Name, log)
		if err != nil {
			return err
		}
		defer tn.Close()
		// Limit counters are per source identity, and tailnet sources are
		// not mesh identities: they get their own file.
		limitsDir := filepath.Join(sc.state, "tailnet-limits")
		if err := os.MkdirAll(limitsDir, 0o700); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		f, err := newFrontend(nil, tailnet.NewIdentifier(tn, tailnet.IdentifierConfig{Source: o.source, Logger: log}), limitsDir)
		if err != nil {
			return err
		}
		ln, err := tn.Listen(o.listenAddr())
		if err != nil {
			return err
		}
		tasks = append(tasks,
			func(ctx context.Context) error { return f.Serve(ctx, ln) },
			func(ctx context.Context) error { return tn.WatchNetmap(ctx, 0, f.Recheck) })
		fmt.Fprintf(env.Stdout, "gateway %s serving %s on the tailnet at http://%s:%d%s (rules: %s)%s\n",
			self, what, o.hostname, o.port, path, rulesNote(o.source), note)
	}
	if len(tasks) == 0 {
		return usagef("nothing to serve: give --listen ADDR, --tailnet, or both")
	}
	return runTasks(ctx, tasks)
}

// rulesNote says where a tailnet gateway's tool rules come from.
func rulesNote(s tailnet.Source) string {
	if s == tailnet.SourceTailnet {
		return "the tailnet policy's " + string(tailnet.CapabilityMCP) + " grants"
	}
	return "this mesh's policy"
}

// serverTLS is the mTLS configuration of a gateway listener; refused
// handshakes are audited through the node's refusal aggregator.
func serverTLS(n *node.Node, self identity.ID, log *slog.Logger) *tls.Config {
	return pki.NewServerTLS(pki.ServerOptions{
		Certificate: n.Client.Certificate,
		Verifier:    n.Client.Verifier(),
		OnRefused: func(remote string, why reason.Code, err error) {
			e := &audit.Event{Kind: audit.KindConnection, SrcAddr: remote, Dst: self.String(), Decision: audit.Deny,
				Reason: why, Outcome: audit.OutcomeRefused, Detail: err.Error()}
			// Aggregated per source: a client that hammers the listener
			// writes counts, not one event per handshake.
			if _, err := n.Refusals.Refuse(context.Background(), e); err != nil {
				log.Error("serve: audit of a refused handshake failed", "err", err)
			}
		},
	})
}

// runTasks runs every task until ctx ends or one of them fails, then stops
// the others and returns when all have returned, with the first failure
// (a cancelled context is not one). A task may also finish early with nil
// (a registration that succeeded) without stopping the others.
func runTasks(ctx context.Context, tasks []func(context.Context) error) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range tasks {
		g.Go(func() error {
			if err := t(ctx); !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		})
	}
	return g.Wait()
}

// registerAddr announces the gateway's address, retrying while the coordinator
// is away: the gateway serves from its cache meanwhile.
func registerAddr(ctx context.Context, n *node.Node, addr string, log *slog.Logger) {
	retry := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for {
		err := n.Client.Register(ctx, []string{addr})
		if err == nil || ctx.Err() != nil {
			return
		}
		wait := retry.Next()
		log.Warn("serve: registering the address failed; retrying", "err", err, "retry_in", wait)
		if backoff.Sleep(ctx, nil, wait) != nil {
			return
		}
	}
}

func newLogger(env Env, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
}

// logWriter turns an upstream's stderr lines into log records.
type logWriter struct {
	log    *slog.Logger
	prefix string
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.log.Info(w.prefix, "stderr", string(p))
	return len(p), nil
}
