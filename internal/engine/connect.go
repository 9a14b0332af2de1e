package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/modelconn"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// ConnectConfig configures Connect.
type ConnectConfig struct {
	// State is the agent node's state directory. Required over mTLS; with
	// Tailnet it is optional (it supplies the tailnet hostname and state
	// defaults, and keeps a TCP endpoint's token).
	State string
	// Service is what to reach: NAME, tool:NAME or model:NAME, resolved
	// through the netmap; with Tailnet, the gateway's tailnet name (NAME
	// or NAME.TAILNET.ts.net, with model: for a model API).
	Service string
	// All serves the aggregated endpoint instead of one service: every
	// tool service in the netmap, its tools and prompts named
	// SERVICE__NAME, its resources under agentmesh://SERVICE/ (package
	// aggregate). Service must then be empty; not over a tailnet.
	All bool
	// NoPrefix, with All, lists tools under their own names instead of
	// SERVICE__TOOL; the endpoint then serves at most one service (none
	// while the agent may reach more), so no tool can shadow another's.
	NoPrefix bool
	// Separator, with All, replaces "__" between a service's name and
	// its tools' and prompts' names (aggregate.CheckSeparator).
	Separator string
	// Listen serves Streamable HTTP (or, for a model, the OpenAI API) on
	// a loopback address (127.0.0.1:PORT) or a private Unix socket
	// (unix:PATH); "" relays MCP over Stdin and Stdout. Listener, when
	// set, is an open loopback listener to serve on instead (Connect
	// closes it).
	Listen   string
	Listener net.Listener
	// NoToken serves a TCP endpoint without its bearer token: every local
	// user and process that can reach the port then acts as this agent.
	NoToken bool
	// Stdin and Stdout carry MCP when there is no listener.
	Stdin  io.Reader
	Stdout io.Writer
	// Tailnet, when set, dials the gateway over a tailnet instead of mTLS.
	Tailnet *TailnetConfig
	// Logger receives the connector's logs; nil discards them.
	Logger *slog.Logger
	// Ready is called once the local endpoint serves (and once for the
	// metrics endpoint, first, when there is one).
	Ready func(Serving)
	// Metrics serves Prometheus metrics when its Listen is set: the
	// node's certificate and view.
	Metrics MetricsConfig
	// OnBehalfOf, an e-mail address, makes the agent act for that person:
	// every request to a gateway carries the newest live delegation the
	// person gave this agent (README "Delegation: agents acting for
	// people"), switching to a newer one when the netmap brings it.
	// Connect fails, saying how to get one, when there is none. Tool
	// services only (one, or All), over mTLS only.
	OnBehalfOf string
}

// resolveWait bounds how long a connection attempt waits for the service
// to appear in the netmap.
const resolveWait = 5 * time.Second

// Connect runs the local side of a connection to a mesh service until ctx
// ends: an MCP relay over stdio or on a local listener, or a model
// service's OpenAI-compatible endpoint. It returns nil when ctx ends.
func Connect(ctx context.Context, cfg ConnectConfig) (err error) {
	if cfg.All {
		return connectAll(ctx, cfg)
	}
	kind, err := cfg.check()
	ln := cfg.Listener
	defer func() {
		if err != nil && ln != nil {
			ln.Close()
		}
	}()
	if err != nil {
		return err
	}
	person, err := cfg.onBehalfOf(kind)
	if err != nil {
		return err
	}
	log := logger(cfg.Logger)
	m, err := openMetrics(cfg.Metrics)
	if err != nil {
		return err
	}
	defer m.close()
	if ln == nil && cfg.Listen != "" {
		if ln, err = listenLocal(cfg.Listen); err != nil {
			return err
		}
	}
	s := Serving{Component: "connector", API: "mcp", Network: "stdio", Service: cfg.Service}
	if kind == identity.KindModel {
		s.API = "model"
	}
	var auth loopback.Auth
	if ln != nil {
		var done func()
		if auth, done, err = localAuth(&s, cfg.State, ln, cfg.NoToken, log); err != nil {
			return err
		}
		defer done()
	}
	var cc connector.Config
	if cfg.Tailnet != nil {
		tn, c, err := cfg.tailnet(ctx, log)
		if err != nil {
			return err
		}
		defer tn.Close()
		cc = c
	} else {
		n, err := node.Start(ctx, cfg.State, node.Options{Logger: log, Metrics: m.set})
		if err != nil {
			return err
		}
		defer n.Close()
		s.Node = n.ID().String()
		cc = meshConnector(n, kind, cfg.Service, log)
		checkService(ctx, n, kind, cfg.Service, log)
		if person != "" {
			src := newDelegationSource(n, person)
			if err := src.wait(ctx); err != nil {
				return err
			}
			cc.Delegation = src.token
		}
	}
	traces, stopTraces, err := startTraces(ctx, "connector", s.Node, log)
	if err != nil {
		return err
	}
	defer stopTraces()
	cc.TracerProvider = traces.TracerProvider()
	s.Traces = traces.Endpoint()
	if m.ln != nil {
		ready(cfg.Ready, m.serving("connector", s.Node))
	}
	ready(cfg.Ready, s)
	ln2 := ln
	ln = nil // the relay owns it now
	// The metrics endpoint serves as long as the relay does (a stdio
	// relay ends when its client closes the pipe).
	mctx, stopMetrics := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- m.task()(mctx) }()
	cc.Metrics = m.set
	err = relay(ctx, kind, ln2, auth, cfg.Stdin, cfg.Stdout, cc)
	stopMetrics()
	if merr := <-served; err == nil && merr != nil && !errors.Is(merr, context.Canceled) {
		err = fmt.Errorf("metrics: %w", merr)
	}
	return err
}

// check validates cfg and returns the service's kind ("" when unsaid).
func (cfg *ConnectConfig) check() (identity.Kind, error) {
	var kind identity.Kind
	var err error
	if cfg.Tailnet != nil {
		if err := CheckTailnet(*cfg.Tailnet, false); err != nil {
			return "", err
		}
		kind, _, err = parseTailnetService(cfg.Service)
	} else {
		kind, _, err = ParseService(cfg.Service)
	}
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrConfig, err)
	case cfg.NoPrefix:
		return "", fmt.Errorf("%w: no-prefix is an option of the aggregated endpoint (--all): a single service's tools keep their names anyway", ErrConfig)
	case kind == identity.KindModel && cfg.Listen == "" && cfg.Listener == nil:
		return "", fmt.Errorf("%w: a model endpoint is HTTP: give a loopback listen address (stdio makes no sense for a model)", ErrConfig)
	case cfg.Tailnet == nil && cfg.State == "":
		return "", fmt.Errorf("%w: a state directory is required (from 'agentmesh join')", ErrConfig)
	case cfg.Listen == "" && cfg.Listener == nil && (cfg.Stdin == nil || cfg.Stdout == nil):
		return "", fmt.Errorf("%w: stdio mode needs Stdin and Stdout", ErrConfig)
	}
	return kind, nil
}

// listenLocal opens a connector's local endpoint on addr (loopback or
// unix:PATH); an address that is not one is a configuration error.
func listenLocal(addr string) (net.Listener, error) {
	ln, err := loopback.Listen(addr)
	if errors.Is(err, httpserver.ErrAddress) || errors.Is(err, loopback.ErrNotLoopback) {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ln, err
}

// localAuth decides how the local endpoint on ln admits its owner, fills
// in where it serves, and returns a function to call when it has stopped.
// A TCP endpoint gets a fresh bearer token, written with mode 0600 to the
// state directory (where only the owner can read it) and removed by done,
// unless noToken opts out; a Unix socket's file mode admits the owner, so
// it needs none.
func localAuth(s *Serving, state string, ln net.Listener, noToken bool, log *slog.Logger) (loopback.Auth, func(), error) {
	path := "/mcp"
	if s.API == "model" {
		path = "/v1"
	}
	s.Addr = ln.Addr().String()
	tcp, ok := ln.Addr().(*net.TCPAddr)
	if !ok {
		s.Network, s.URL = "unix", loopback.UnixPrefix+s.Addr
		return loopback.Auth{}, func() {}, nil
	}
	s.Network, s.URL = "http", "http://"+s.Addr+path
	if noToken {
		s.NoToken = true
		return loopback.Auth{NoToken: true}, func() {}, nil
	}
	if state == "" {
		return loopback.Auth{}, nil, fmt.Errorf("%w: the endpoint's bearer token is written to the state directory: give one, or a unix: listen address, or opt out of the token", ErrConfig)
	}
	dir, err := nodestate.Open(state)
	if err != nil {
		return loopback.Auth{}, nil, err
	}
	token, err := loopback.NewToken()
	if err != nil {
		return loopback.Auth{}, nil, err
	}
	port := strconv.Itoa(tcp.Port)
	if s.TokenFile, err = dir.SaveLocalToken(port, token); err != nil {
		return loopback.Auth{}, nil, err
	}
	done := func() {
		if err := dir.RemoveLocalToken(port); err != nil {
			log.Warn("connect: removing the token file failed", "err", err)
		}
	}
	return loopback.Auth{Token: token}, done, nil
}

// meshConnector is how a connector reaches service over mTLS: at the
// address the netmap gives for it, and only if the gateway there presents
// the SPIFFE ID the netmap names for it, asked again at every handshake.
func meshConnector(n *node.Node, kind identity.Kind, service string, log *slog.Logger) connector.Config {
	_, name, _ := ParseService(service) // checked by check
	target := func() (netmap.Node, error) { return resolveService(n.View().Netmap, kind, name) }
	tlsCfg := transport.ClientTLS(n.Client.Certificate, n.Client.Verifier(), func() (identity.ID, error) {
		t, err := target()
		if err != nil {
			return identity.ID{}, err
		}
		return t.ID, nil
	})
	resolve := func(ctx context.Context) (string, error) {
		if n.Client.Revoked() {
			// The coordinator has said so: every gateway refuses this
			// certificate, and the netmap this node keeps is stale (its
			// addresses may name gateways that have stopped), so say what
			// the coordinator said instead of dialling.
			return "", &connector.ResolveError{Code: reason.Revoked,
				Err: fmt.Errorf("this agent (%s) has been revoked: join again with a new auth key", n.ID())}
		}
		t, err := target()
		if err != nil {
			// Right after start the netmap may not have arrived yet, or
			// the gateway may still be registering: wait briefly for a
			// view in which the service resolves.
			wctx, cancel := context.WithTimeout(ctx, resolveWait)
			v, werr := n.WaitView(wctx, func(v node.View) bool {
				_, err := resolveService(v.Netmap, kind, name)
				return err == nil
			})
			cancel()
			if werr != nil {
				return "", err
			}
			if t, err = resolveService(v.Netmap, kind, name); err != nil {
				return "", err
			}
		}
		return "https://" + t.Addrs[0], nil
	}
	return connector.Config{TLS: tlsCfg, Logger: log, Resolve: resolve, Service: service}
}

// tailnet joins the tailnet for a connector and returns the node (to
// close) and how the connector reaches the gateway over it.
func (cfg *ConnectConfig) tailnet(ctx context.Context, log *slog.Logger) (io.Closer, connector.Config, error) {
	_, host, _ := parseTailnetService(cfg.Service) // checked by check
	var name identity.Name
	if cfg.State != "" {
		d, err := nodestate.Open(cfg.State)
		if err != nil {
			return nil, connector.Config{}, err
		}
		c, err := d.Config()
		if err != nil {
			return nil, connector.Config{}, err
		}
		id, err := c.ID()
		if err != nil {
			return nil, connector.Config{}, err
		}
		name = id.Name
	}
	tc, err := cfg.Tailnet.resolve(cfg.State, name)
	if err != nil {
		return nil, connector.Config{}, err
	}
	tn, err := joinTailnet(ctx, tc, log)
	if err != nil {
		return nil, connector.Config{}, err
	}
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(tc.Port))
	resolve := func(context.Context) (string, error) { return base, nil }
	return tn, connector.Config{Dial: tn.Dial, Logger: log, Resolve: resolve, Service: cfg.Service}, nil
}

// relay serves the local side of a connection to a gateway until ctx
// ends: the model API on ln for a model service, else MCP on ln or, when
// ln is nil, over stdin and stdout; auth admits the clients of ln. It
// closes ln.
func relay(ctx context.Context, kind identity.Kind, ln net.Listener, auth loopback.Auth, stdin io.Reader, stdout io.Writer, cfg connector.Config) error {
	var err error
	if kind == identity.KindModel {
		err = serveModel(ctx, modelconn.Config{Resolve: cfg.Resolve, TLS: cfg.TLS, Dial: cfg.Dial, Logger: cfg.Logger, TracerProvider: cfg.TracerProvider}, ln, auth)
	} else {
		err = serveMCP(ctx, cfg, ln, auth, stdin, stdout)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// serveMCP relays MCP on ln, or over stdin and stdout when ln is nil.
func serveMCP(ctx context.Context, cfg connector.Config, ln net.Listener, auth loopback.Auth, stdin io.Reader, stdout io.Writer) error {
	cn, err := connector.New(cfg)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	defer cn.Close()
	if ln != nil {
		return cn.ServeListener(ctx, ln, auth)
	}
	return cn.ServeStdio(ctx, stdin, stdout)
}

// serveModel runs the local OpenAI-compatible endpoint of a model service
// on ln, admitting clients by auth. It closes ln.
func serveModel(ctx context.Context, cfg modelconn.Config, ln net.Listener, auth loopback.Auth) error {
	l, err := modelconn.New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer l.Close()
	return l.Serve(ctx, ln, auth)
}

// checkService tells, once at start, what can be known already of why
// requests to service would fail: this agent has been revoked (the
// coordinator says so), or the service does not resolve (unknown, or not
// serving). Each is a warning on log, not an error: the service may come
// up later, and every request that fails says why to the MCP client too.
// A service that is not serving yet gets resolveWait to register (its
// gateway may be starting alongside).
func checkService(ctx context.Context, n *node.Node, kind identity.Kind, service string, log *slog.Logger) {
	_, name, _ := ParseService(service) // checked by check
	cctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()
	nm, err := n.Client.Netmap(cctx, -1)
	switch {
	case n.Client.Revoked():
		log.Warn("connect: this agent has been revoked: the gateway will refuse every request (revoked); join again with a new auth key", "node", n.ID().String())
		return
	case err != nil || nm == nil:
		log.Warn("connect: the coordinator did not answer; checking the service against the cached netmap", "err", err)
		nm = n.View().Netmap
	}
	_, err = resolveService(nm, kind, name)
	re := &connector.ResolveError{}
	if !errors.As(err, &re) {
		return // resolveService's only errors are ResolveErrors
	}
	if re.Code == reason.NotServing {
		if _, werr := n.WaitView(cctx, func(v node.View) bool {
			_, err := resolveService(v.Netmap, kind, name)
			return err == nil
		}); werr == nil {
			return
		}
	}
	log.Warn("connect: "+re.Error()+"; starting anyway: the MCP client's requests fail with this reason until it resolves", "reason", re.Code)
}

// cutServiceKind splits an optional "tool:" or "model:" prefix off s.
func cutServiceKind(s string) (identity.Kind, string, error) {
	k, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", s, nil
	}
	pk, err := identity.ParseKind(k)
	if err != nil || !pk.Serves() {
		return "", "", fmt.Errorf("service %q: the prefix must be tool: or model:", s)
	}
	return pk, rest, nil
}

// ParseService reads a mesh service: "NAME", "tool:NAME" or "model:NAME".
// The kind is "" when s does not say.
func ParseService(s string) (identity.Kind, identity.Name, error) {
	kind, s, err := cutServiceKind(s)
	if err != nil {
		return "", "", err
	}
	name, err := identity.ParseName(s)
	if err != nil {
		return "", "", err
	}
	return kind, name, nil
}

// resolveService finds an active serving node with an address. Its
// errors are connector.ResolveErrors, whose reason and one-line text the
// agent's MCP client receives: unknown_service for a name this node's
// netmap does not list as a service (a typo, or no grant), not_serving
// for a service that has joined but registers no address.
func resolveService(nm *netmap.Netmap, kind identity.Kind, name identity.Name) (netmap.Node, error) {
	unknown := func(format string, a ...any) (netmap.Node, error) {
		return netmap.Node{}, &connector.ResolveError{Code: reason.UnknownService, Err: fmt.Errorf(format, a...)}
	}
	if nm == nil {
		return unknown("no netmap yet: this node has never reached the coordinator (is 'agentmesh coordinator' running?)")
	}
	n, ok := nm.Node(name)
	switch {
	case !ok || n.Status != netmap.StatusActive:
		return unknown("no service named %q in this node's netmap: check the name, and that a grant lets this node reach it ('agentmesh policy check')", name)
	case kind != "" && n.Kind != kind:
		return unknown("%q is %s node, not %s", name, n.Kind.WithArticle(), kind.WithArticle())
	case !n.Kind.Serves():
		return unknown("%q is %s node; only tool and model nodes serve", name, n.Kind.WithArticle())
	case len(n.Addrs) == 0:
		return netmap.Node{}, &connector.ResolveError{Code: reason.NotServing,
			Err: fmt.Errorf("%q has joined the mesh but is not serving: start its gateway ('agentmesh serve --state DIR ...')", name)}
	}
	return n, nil
}

// parseTailnetService reads "HOST", "tool:HOST" or "model:HOST", HOST a
// tailnet name such as "tools" or "tools.example.ts.net".
func parseTailnetService(s string) (identity.Kind, string, error) {
	kind, s, err := cutServiceKind(s)
	if err != nil {
		return "", "", err
	}
	if !validHostname(s) {
		return "", "", fmt.Errorf("service %q: want the gateway's tailnet name, such as tools or tools.example.ts.net", s)
	}
	return kind, s, nil
}

// validHostname reports whether s is a DNS name of letters, digits and
// hyphens in dot-separated labels of at most 63 characters.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
