package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/gateway"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/modelgw"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// DefaultGatewayListen is where a gateway listens unless told otherwise:
// loopback on a free port, so nothing is exposed by surprise.
const DefaultGatewayListen = "127.0.0.1:0"

// GatewayConfig configures ServeGateway.
type GatewayConfig struct {
	// State is the node's state directory (from 'agentmesh join').
	// Required; the node must be of kind tool or model.
	State string
	// Listen is the mTLS listener's address; "" runs none, which needs
	// Tailnet.
	Listen string
	// Advertise is the address registered for connectors; "" is the
	// listener's own address.
	Advertise string
	// UpstreamURL is a Streamable HTTP MCP server's URL or, for a model
	// node, the OpenAI-compatible API's base URL. UpstreamCommand is a
	// stdio MCP server's argv instead (one process per client session;
	// tool nodes only). Exactly one is required.
	UpstreamURL     string
	UpstreamCommand []string
	// UpstreamHandler is an MCP server in this process instead
	// (gateway.HandlerUpstream: the same enforcement and audit, called
	// without a connection; tool nodes only).
	UpstreamHandler http.Handler
	// UpstreamStderr receives a stdio upstream's stderr; nil logs it.
	UpstreamStderr io.Writer
	// RequireUpstream refuses to start (ErrUpstream) when the stdio
	// command is not found or the HTTP upstream does not answer at start;
	// false only warns, since the upstream may come up later.
	RequireUpstream bool
	// MaxMessageBytes is the largest JSON-RPC message (or model request
	// body) accepted from a client; 0 is 4 MiB.
	MaxMessageBytes int
	// RecordArgsHash stores the SHA-256 of tool call arguments in audit
	// events.
	RecordArgsHash bool
	// Caps bound what clients can make the gateway hold.
	Caps Caps
	// Tailnet, when set, also serves on a tailnet (Tailscale mode).
	Tailnet *TailnetConfig
	// Logger receives the gateway's logs; nil discards them.
	Logger *slog.Logger
	// Ready is called once per listener, when it serves.
	Ready func(Serving)
	// Metrics serves Prometheus metrics when its Listen is set.
	Metrics MetricsConfig
}

// Caps bound what clients can make a gateway hold; a zero field is the
// gateway's default (see gateway.Config and package budget).
type Caps struct {
	RequestsPerPeer, SessionsPerPeer, ProcessesPerPeer, Processes int
	Bodies                                                        budget.Bodies
}

// DefaultCaps are the defaults of Caps' fields, for flag defaults.
var DefaultCaps = Caps{
	RequestsPerPeer:  gateway.DefaultMaxRequestsPerPeer,
	SessionsPerPeer:  gateway.DefaultMaxSessionsPerPeer,
	ProcessesPerPeer: gateway.DefaultMaxProcessesPerPeer,
	Processes:        gateway.DefaultMaxProcesses,
	Bodies:           budget.Bodies{Timeout: budget.DefaultBodyTimeout},
}

// DefaultMaxMessageBytes is GatewayConfig.MaxMessageBytes' default.
const DefaultMaxMessageBytes = 4 << 20

// check reports what is missing or contradictory in cfg.
func (cfg *GatewayConfig) check() error {
	switch {
	case cfg.State == "":
		return fmt.Errorf("%w: a state directory is required (from 'agentmesh join')", ErrConfig)
	case countTrue(cfg.UpstreamURL != "", len(cfg.UpstreamCommand) > 0, cfg.UpstreamHandler != nil) != 1:
		return fmt.Errorf("%w: give exactly one upstream: a URL or a command", ErrConfig)
	case cfg.Listen == "" && cfg.Tailnet == nil:
		return fmt.Errorf("%w: nothing to serve: give a listen address, the tailnet, or both", ErrConfig)
	}
	if cfg.Tailnet != nil {
		return CheckTailnet(*cfg.Tailnet, true)
	}
	return nil
}

// countTrue is how many of bs are true.
func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
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

// gatewayNode is a running node with the gateways that enforce its view.
type gatewayNode struct {
	cfg     *GatewayConfig
	metrics metricsEndpoint
	n       *node.Node
	self    identity.ID
	log     *slog.Logger

	// traces is the tracing of the node's MCP gateways.
	traces *tracing.Provider

	mu     sync.Mutex
	fronts []frontend
	latest *node.View

	// tools reports the tool definitions the gateways see (tool nodes).
	tools *toolReporter

	// viewOnce makes the first listener that is ready wait for the
	// coordinator's current view.
	viewOnce sync.Once
}

// stateOf is what the gateway of self enforces from view v: its policy,
// and the shadow policy evaluated next to it.
func stateOf(self identity.ID, v node.View) *admission.State {
	st := admission.NewState(self, v.Netmap, v.Policy, v.Stale)
	st.Shadow, st.ShadowFailed = v.Shadow, v.ShadowFailed
	return st
}

// onView hands a new view to every gateway of the node.
func (g *gatewayNode) onView(v node.View) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.latest = &v
	for _, f := range g.fronts {
		f.Update(stateOf(g.self, v))
	}
	if v.Netmap != nil {
		// What the gateway enforces from now on; the policy bench reads it
		// (serve -v) as the moment an apply is enforced.
		g.log.Debug("serve: enforcing view", "netmap", v.Netmap.Version, "policy", v.Policy.Version(), "stale", v.Stale)
	}
}

// newFrontend makes a gateway for one listener and hands it the current
// view before it serves anything. tlsCfg is nil for the tailnet, where
// ident identifies callers instead; limitsDir keeps model limit counters.
func (g *gatewayNode) newFrontend(tlsCfg *tls.Config, ident admission.Identifier, limitsDir string) (frontend, error) {
	cfg, c := g.cfg, g.cfg.Caps
	maxBytes := cfg.MaxMessageBytes
	if maxBytes == 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	var f frontend
	var err error
	if g.self.Kind == identity.KindModel {
		f, err = modelgw.New(modelgw.Config{TLS: tlsCfg, Identifier: ident, Upstream: cfg.UpstreamURL, Audit: metered(g.n, g.metrics.set), Refusals: g.n.Refusals,
			StateDir: limitsDir, MaxBodyBytes: int64(maxBytes), Bodies: c.Bodies,
			MaxRequestsPerPeer: c.RequestsPerPeer, Logger: g.log, TracerProvider: g.traces.TracerProvider(), Metrics: g.metrics.set}, nil)
	} else {
		var up gateway.Upstream = gateway.HTTPUpstream{URL: cfg.UpstreamURL}
		if cfg.UpstreamHandler != nil {
			up = gateway.HandlerUpstream{Handler: cfg.UpstreamHandler}
		}
		if len(cfg.UpstreamCommand) > 0 {
			stderr := cfg.UpstreamStderr
			if stderr == nil {
				stderr = &logWriter{log: g.log, prefix: "upstream"}
			}
			up = gateway.CommandUpstream{Argv: cfg.UpstreamCommand, Stderr: stderr}
		}
		f, err = gateway.New(gateway.Config{TLS: tlsCfg, Identifier: ident, Upstream: up, Audit: metered(g.n, g.metrics.set), Refusals: g.n.Refusals, Metrics: g.metrics.set,
			Limits: mcpwire.Limits{MaxBytes: maxBytes}, Logger: g.log, RecordArgsHash: cfg.RecordArgsHash, TracerProvider: g.traces.TracerProvider(),
			MaxRequestsPerPeer: c.RequestsPerPeer, MaxSessionsPerPeer: c.SessionsPerPeer,
			MaxProcessesPerPeer: c.ProcessesPerPeer, MaxProcesses: c.Processes, Bodies: c.Bodies, OnTools: g.tools.offer,
			Approvals: g.n.Client}, nil)
	}
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fronts = append(g.fronts, f)
	if g.latest != nil {
		f.Update(stateOf(g.self, *g.latest))
	}
	return f, nil
}

// ServeGateway runs the gateway of the tool or model node in cfg.State
// until ctx ends: on the mTLS listener, on the tailnet, or both. Every
// listener enforces the node's current view, and the mTLS listener's
// address is registered with the coordinator (retrying while it is away;
// the gateway serves from its cached view meanwhile). It returns nil when
// ctx ends, or the first failure, after stopping everything it started.
// It is OpenNode then Node.Serve, with the configuration checked before
// the node is opened, so that a refusal touches nothing.
func ServeGateway(ctx context.Context, cfg GatewayConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	warnUpstream, err := checkUpstream(ctx, &cfg)
	if err != nil {
		return err
	}
	m, err := openMetrics(cfg.Metrics)
	if err != nil {
		return err
	}
	defer m.close()
	e, err := openNode(ctx, NodeConfig{State: cfg.State, Logger: cfg.Logger, metrics: m.set}, true)
	if err != nil {
		return err
	}
	defer e.Close()
	return e.serveGateway(ctx, &cfg, warnUpstream, m)
}

// serveGateway serves the gateway of e on the listeners cfg names, whose
// upstream checkUpstream has checked (warnUpstream tells once serving).
func (e *Node) serveGateway(ctx context.Context, cfg *GatewayConfig, warnUpstream func(*slog.Logger), m metricsEndpoint) error {
	g := &gatewayNode{cfg: cfg, metrics: m, log: logger(cfg.Logger), n: e.n, self: e.n.ID()}
	traces, stopTraces, err := startTraces(ctx, "gateway", g.self.String(), g.log)
	if err != nil {
		return err
	}
	defer stopTraces()
	g.traces = traces
	switch {
	case !g.self.Kind.Serves():
		return fmt.Errorf("%w: this node is %s; only tool and model nodes serve (join with a key of kind tool or model)", ErrConfig, g.self.Kind.WithArticle())
	case g.self.Kind == identity.KindModel && cfg.UpstreamURL == "":
		return fmt.Errorf("%w: a model node serves an OpenAI-compatible HTTP API: give its base URL as the upstream (a stdio command or an in-process handler makes no sense for a model)", ErrConfig)
	}
	defer e.subscribe(g.onView)()
	api, path := "mcp", "/mcp"
	if g.self.Kind == identity.KindModel {
		api, path = "model", "/v1"
	}
	tasks := []task{m.task()}
	if g.self.Kind == identity.KindTool {
		g.tools = newToolReporter(e.n.Client, g.log)
		tasks = append(tasks, g.tools.run)
	}
	if m.ln != nil {
		ready(cfg.Ready, m.serving("gateway", g.self.String()))
	}
	if cfg.Listen != "" {
		t, err := g.serveMTLS(ctx, api, path)
		if err != nil {
			return err
		}
		tasks = append(tasks, t...)
	}
	if cfg.Tailnet != nil {
		tn, t, err := g.serveTailnet(ctx, api, path)
		if err != nil {
			return err
		}
		defer tn.Close()
		tasks = append(tasks, t...)
	}
	warnUpstream(g.log)
	return runTasks(ctx, tasks)
}

// firstViewWait bounds how long a starting gateway waits for the
// coordinator to confirm its view.
const firstViewWait = 5 * time.Second

// awaitCurrentView waits, briefly, until the node's view is the
// coordinator's current one, so that a gateway that says it serves
// enforces the current netmap and policy, not the cache of its last run
// (which may predate the peers that joined since). It asks the coordinator
// for its current version once (an answer that does not wait for a
// change), then waits for the node's view to reach it. A coordinator that
// does not answer in time is not an error: the gateway then serves from
// its cache, as it does whenever the coordinator is away, and says so.
// It runs once, after the listeners are open (so that a mistake in an
// address is reported at once) and before the first is announced.
func (g *gatewayNode) awaitCurrentView(ctx context.Context) {
	g.viewOnce.Do(func() {
		wctx, cancel := context.WithTimeout(ctx, firstViewWait)
		defer cancel()
		current, err := g.n.Client.Netmap(wctx, -1)
		if err == nil && current != nil {
			_, err = g.n.WaitView(wctx, func(v node.View) bool { return v.Netmap != nil && v.Netmap.Version >= current.Version })
		}
		if err != nil && ctx.Err() == nil {
			g.log.Warn("serve: could not learn the coordinator's current view; serving from this node's cache meanwhile", "err", err)
		}
	})
}

// serveMTLS opens the mTLS listener and returns the tasks that serve it
// and register its address.
func (g *gatewayNode) serveMTLS(ctx context.Context, api, path string) ([]task, error) {
	f, err := g.newFrontend(g.serverTLS(), nil, g.cfg.State)
	if err != nil {
		return nil, err
	}
	ln, err := httpserver.Listen(g.cfg.Listen)
	if errors.Is(err, httpserver.ErrAddress) {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	} else if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	g.n.Listening(addr)
	adv := g.cfg.Advertise
	if adv == "" {
		adv = addr
	}
	g.awaitCurrentView(ctx)
	s := Serving{Component: "gateway", Node: g.self.String(), API: api, Network: "mtls", Addr: addr, URL: "https://" + addr + path}
	s.Traces = g.traces.Endpoint()
	if api == "model" {
		s.Upstream = g.cfg.UpstreamURL
	}
	ready(g.cfg.Ready, s)
	return []task{
		func(ctx context.Context) error { g.register(ctx, adv); return nil },
		func(ctx context.Context) error { return f.Serve(ctx, ln) },
	}, nil
}

// serveTailnet joins the tailnet and returns the node (to close) and the
// tasks that serve on it and re-check callers when the tailnet changes.
func (g *gatewayNode) serveTailnet(ctx context.Context, api, path string) (io.Closer, []task, error) {
	tc, err := g.cfg.Tailnet.resolve(g.cfg.State, g.self.Name)
	if err != nil {
		return nil, nil, err
	}
	tn, err := joinTailnet(ctx, tc, g.log)
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			tn.Close()
		}
	}()
	// Limit counters are per source identity, and tailnet sources are
	// not mesh identities: they get their own directory.
	limitsDir := filepath.Join(g.cfg.State, "tailnet-limits")
	if err := os.MkdirAll(limitsDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("serve: %w", err)
	}
	ident, err := tailnetIdentifier(tn, tc.Rules, g.log)
	if err != nil {
		return nil, nil, err
	}
	f, err := g.newFrontend(nil, ident, limitsDir)
	if err != nil {
		return nil, nil, err
	}
	ln, err := tn.Listen(tc.listenAddr())
	if err != nil {
		return nil, nil, err
	}
	g.awaitCurrentView(ctx)
	url := fmt.Sprintf("http://%s:%d%s", tc.Hostname, tc.Port, path)
	if g.cfg.Listen == "" {
		g.n.Listening(url) // else the lock file names the mTLS listener
	}
	s := Serving{Component: "gateway", Node: g.self.String(), API: api, Network: "tailnet", Addr: ln.Addr().String(), URL: url, Rules: tc.rulesNote()}
	s.Traces = g.traces.Endpoint()
	if api == "model" {
		s.Upstream = g.cfg.UpstreamURL
	}
	ready(g.cfg.Ready, s)
	ok = true
	return tn, []task{
		func(ctx context.Context) error { return f.Serve(ctx, ln) },
		func(ctx context.Context) error { return tn.WatchNetmap(ctx, 0, f.Recheck) },
	}, nil
}

// serverTLS is the mTLS configuration of a gateway listener; refused
// handshakes are audited through the node's refusal aggregator.
func (g *gatewayNode) serverTLS() *tls.Config {
	n, self, log := g.n, g.self, g.log
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

// register announces the gateway's address, retrying while the coordinator
// is away: the gateway serves from its cache meanwhile.
func (g *gatewayNode) register(ctx context.Context, addr string) {
	retry := backoff.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	for {
		err := g.n.Client.Register(ctx, []string{addr})
		if err == nil || ctx.Err() != nil {
			return
		}
		wait := retry.Next()
		g.log.Warn("serve: registering the address failed; retrying", "err", err, "retry_in", wait)
		if backoff.Sleep(ctx, nil, wait) != nil {
			return
		}
	}
}
