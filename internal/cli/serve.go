package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"agentmesh/internal/audit"
	"agentmesh/internal/gateway"
	"agentmesh/internal/identity"
	"agentmesh/internal/mcpwire"
	"agentmesh/internal/modelgw"
	"agentmesh/internal/netmap"
	"agentmesh/internal/node"
	"agentmesh/internal/pki"
	"agentmesh/internal/policy"
)

// DefaultServeListen is where a gateway listens unless told otherwise:
// loopback on a free port, so nothing is exposed by surprise. Pass
// --listen 0.0.0.0:7800 (or a host address) to serve other hosts.
const DefaultServeListen = "127.0.0.1:0"

func init() {
	register(&command{
		name:  "serve",
		usage: "--state DIR [--listen ADDR] [--advertise ADDR] (--upstream URL | -- COMMAND [ARGS...])",
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
  agentmesh serve --state ./llm --upstream http://127.0.0.1:8000`,
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
	verbose := fs.Bool("v", false, "log to stderr at debug level")
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
	if err := needState(*state); err != nil {
		return err
	}
	log := newLogger(env, *verbose)
	var up gateway.Upstream = gateway.CommandUpstream{Argv: rest, Stderr: &logWriter{log: log, prefix: "upstream"}}
	if *upstreamURL != "" {
		up = gateway.HTTPUpstream{URL: *upstreamURL}
	}
	return serve(ctx, env, serveConfig{state: *state, listen: *listen, advertise: *advertise, upstream: up,
		limits: mcpwire.Limits{MaxBytes: *maxBytes}, argsHash: *argsHash, log: log, modelUpstream: *upstreamURL})
}

type serveConfig struct {
	state, listen, advertise string
	upstream                 gateway.Upstream
	limits                   mcpwire.Limits
	argsHash                 bool
	log                      *slog.Logger
	// ready, when set, receives the gateway's address once it serves.
	ready func(addr string)
	// modelUpstream is the --upstream URL, used as the model API's base
	// URL when the node is of kind model ("" with a stdio command).
	modelUpstream string
}

// serve runs a gateway until ctx ends.
func serve(ctx context.Context, env Env, sc serveConfig) error {
	log := sc.log
	var (
		mu     sync.Mutex
		gw     *gateway.Gateway
		mgw    *modelgw.Gateway
		latest *node.View
		self   identity.ID
	)
	n, err := node.Start(ctx, sc.state, node.Options{Logger: log, Audit: true, OnView: func(v node.View) {
		mu.Lock()
		defer mu.Unlock()
		latest = &v
		if gw != nil {
			gw.Update(gatewayState(v, self))
		}
		if mgw != nil {
			mgw.Update(gatewayState(v, self))
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
	tlsCfg := pki.NewServerTLS(pki.ServerOptions{
		Certificate: n.Client.Certificate,
		Verifier:    n.Client.Verifier(),
		OnRefused: func(remote string, reason pki.Reason, err error) {
			e := &audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Time: time.Now().UTC(), Kind: audit.KindConnection,
				SrcAddr: remote, Dst: self.String(), Decision: audit.Deny, Reason: string(reason), Detail: err.Error()}
			// The handshake goroutine must not block on a full spool
			// forever; the spool's queue applies backpressure.
			if err := n.Record(context.Background(), e); err != nil {
				log.Error("serve: audit of a refused handshake failed", "err", err)
			}
		},
	})
	if self.Kind == identity.KindModel {
		return serveModel(ctx, env, n, sc, tlsCfg, self, func(g *modelgw.Gateway) {
			mu.Lock()
			defer mu.Unlock()
			mgw = g
			if latest != nil {
				mgw.Update(gatewayState(*latest, self))
			}
		})
	}
	g, err := gateway.New(gateway.Config{TLS: tlsCfg, Upstream: sc.upstream, Audit: n, Limits: sc.limits, Logger: log, RecordArgsHash: sc.argsHash}, nil)
	if err != nil {
		return err
	}
	mu.Lock()
	gw = g
	if latest != nil {
		gw.Update(gatewayState(*latest, self))
	}
	mu.Unlock()
	ln, err := net.Listen("tcp", sc.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	adv := sc.advertise
	if adv == "" {
		adv = addr
	}
	regCtx, stopReg := context.WithCancel(ctx)
	var regWG sync.WaitGroup
	regWG.Add(1)
	go func() {
		defer regWG.Done()
		registerAddr(regCtx, n, adv, log)
	}()
	defer func() { stopReg(); regWG.Wait() }()
	fmt.Fprintf(env.Stdout, "gateway %s serving MCP at https://%s/mcp\n", self, addr)
	if sc.ready != nil {
		sc.ready(addr)
	}
	err = g.Serve(ctx, ln)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// registerAddr announces the gateway's address, retrying while the coordinator
// is away: the gateway serves from its cache meanwhile.
func registerAddr(ctx context.Context, n *node.Node, addr string, log *slog.Logger) {
	backoff := 200 * time.Millisecond
	for {
		err := n.Client.Register(ctx, []string{addr})
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Warn("serve: registering the address failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// gatewayState turns a node view into what the gateway enforces: only
// active nodes are peers; a node absent from the netmap is refused.
func gatewayState(v node.View, self identity.ID) *gateway.State {
	s := &gateway.State{Policy: v.Policy, SelfID: self, Peers: map[identity.Name]gateway.Peer{},
		Self: policy.Node{Name: self.Name, Kind: self.Kind, Tags: []identity.Tag{}}}
	if v.Netmap == nil {
		return s
	}
	for _, nn := range v.Netmap.Nodes {
		if nn.Status != netmap.StatusActive {
			continue
		}
		id, err := identity.Parse(nn.ID)
		if err != nil {
			continue
		}
		tags, err := identity.ParseTags(nn.Tags)
		if err != nil {
			continue
		}
		pn := policy.Node{Name: id.Name, Kind: id.Kind, Tags: tags}
		if id == self {
			s.Self = pn
		}
		s.Peers[id.Name] = gateway.Peer{Node: pn, ID: id, Incarnation: nn.Incarnation}
	}
	return s
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
