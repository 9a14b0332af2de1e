package connector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/tracing"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// DefaultMaxMessageBytes is the default bound on one JSON-RPC message or SSE
// event handled by the connector.
const DefaultMaxMessageBytes = 16 << 20

// Config configures a [Connector].
type Config struct {
	// Resolve returns the gateway's base URL (https://host:port) for the
	// service; it is called on every (re)connection so netmap changes are
	// picked up. The CLI resolves `tool:NAME` or a node name through the
	// netmap. A trailing "/mcp" is accepted. Required.
	Resolve func(ctx context.Context) (string, error)
	// TLS is the client configuration with the node certificate (renewed live
	// through GetClientCertificate) and the check of the gateway's identity
	// (transport.ClientTLS). It is cloned; TLS 1.3 is enforced, and a
	// configuration that does not check the server with a verifier of its
	// own is refused (see package transport). Required unless Dial is set:
	// the mTLS identity is the connector's only credential.
	TLS *tls.Config
	// Dial, when set, connects to the gateway over a transport that
	// authenticates and encrypts by itself, such as a tailnet
	// (tailnet.Node.Dial): the transport's identity is then the credential,
	// TLS must be nil, and Resolve returns http://host:port, spoken as
	// HTTP/2 without TLS inside that transport. Nil dials TCP and requires
	// TLS and https.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
	// MaxMessageBytes bounds one message from the agent in stdio mode and one
	// message or SSE event from the gateway. Zero means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
	// Service names what the connector reaches in what it logs ("files",
	// "tool:files"); "" says "the service".
	Service string
	// SlowAfter is how long a request may wait for the gateway's answer
	// before the connector logs, once, that it is still waiting: a gateway
	// whose MCP server is a stdio command starts a process per session,
	// which takes seconds (npx), and the person behind the MCP client
	// should see why nothing happens. Zero means DefaultSlowAfter; a
	// negative value never logs.
	SlowAfter time.Duration
	// TracerProvider, when set, traces every message sent to the gateway
	// as a client span and propagates its context to the gateway (W3C
	// traceparent in HTTP headers and, from MCP 2026-07-28 on, in
	// params._meta); nil traces nothing. See package tracing.
	TracerProvider trace.TracerProvider
	// Metrics counts the local endpoint's refusals (a request without the
	// token, a foreign Host or Origin); nil records nothing.
	Metrics *metrics.Set
	// Delegation, when set, is asked on every request to the gateway for
	// the delegation to send with it (the agent acting for a person, as
	// the header delegation.Header; see WithDelegation); an error fails
	// the request instead of sending it without.
	Delegation func() (string, error)
}

// DefaultSlowAfter is Config.SlowAfter's default.
const DefaultSlowAfter = time.Second

// Connector forwards a local MCP endpoint to a gateway over mTLS. One
// Connector may serve several endpoints at once; they share its connection
// pool. Close releases idle connections.
type Connector struct {
	service   string
	slowAfter time.Duration // < 0: never say a request is slow
	resolve   func(context.Context) (string, error)
	log       *slog.Logger
	transport *http.Transport
	client    *http.Client
	dialRaw   func(ctx context.Context, network, addr string) (net.Conn, error)
	scheme    string // of gateway URLs: https, or http with Config.Dial
	maxMsg    int
	tr        tracing.Tracer
	metrics   *metrics.Set

	// gw is the most recently resolved gateway; requests are addressed to
	// it, and every new dial re-resolves and refreshes it.
	gw atomic.Pointer[gatewayAddr]
}

// gatewayAddr is one resolution of the gateway.
type gatewayAddr struct {
	endpoint string // https://host:port/mcp
	addr     string // host:port, as http.Transport dials it
}

// New validates cfg and returns a Connector. It does not contact the gateway.
func New(cfg Config) (*Connector, error) {
	if cfg.Resolve == nil {
		return nil, fmt.Errorf("%w: Resolve is required", ErrConfig)
	}
	tc := transport.Config{TLS: cfg.TLS, Dial: cfg.Dial}
	tr, err := transport.New(tc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxMsg := cfg.MaxMessageBytes
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessageBytes
	}
	slowAfter := cfg.SlowAfter
	if slowAfter == 0 {
		slowAfter = DefaultSlowAfter
	}
	service := cfg.Service
	if service == "" {
		service = "the service"
	}
	c := &Connector{
		metrics:   cfg.Metrics,
		service:   service,
		slowAfter: slowAfter,
		resolve:   cfg.Resolve,
		log:       log,
		maxMsg:    maxMsg,
		tr:        tracing.NewTracer(cfg.TracerProvider, "connector"),
		scheme:    tc.Scheme(),
		transport: tr,
		client:    transport.Client(tr),
		// Every new connection re-resolves the gateway first (see dial).
		dialRaw: tr.DialContext,
	}
	tr.DialContext = c.dial
	if cfg.Delegation != nil {
		c.client.Transport = WithDelegation(tr, cfg.Delegation)
	}
	return c, nil
}

// Close closes idle connections to the gateway. Endpoints still being served
// keep working (they open new connections as needed). Close is idempotent.
func (c *Connector) Close() error {
	c.transport.CloseIdleConnections()
	return nil
}

// parseGatewayURL validates a base URL returned by Resolve, whose scheme
// must be scheme.
func parseGatewayURL(raw, scheme string) (*gatewayAddr, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayURL, err)
	}
	if u.Scheme != scheme {
		return nil, fmt.Errorf("%w: %q is not %s", ErrGatewayURL, raw, scheme)
	}
	if u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q", ErrGatewayURL, raw)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if scheme == "http" {
			port = "80"
		}
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	if !strings.HasSuffix(path, "/mcp") {
		path += "/mcp"
	}
	return &gatewayAddr{
		endpoint: scheme + "://" + u.Host + path,
		addr:     net.JoinHostPort(u.Hostname(), port),
	}, nil
}

// refresh calls Resolve and publishes the result.
func (c *Connector) refresh(ctx context.Context) (*gatewayAddr, error) {
	raw, err := c.resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("resolve gateway: %w", err)
	}
	g, err := parseGatewayURL(raw, c.scheme)
	if err != nil {
		return nil, fmt.Errorf("resolve gateway: %w", err)
	}
	if old := c.gw.Swap(g); old != nil && old.endpoint != g.endpoint {
		c.log.Info("gateway address changed", "from", old.endpoint, "to", g.endpoint)
	}
	return g, nil
}

// current returns the last resolved gateway, resolving it the first time.
func (c *Connector) current(ctx context.Context) (*gatewayAddr, error) {
	if g := c.gw.Load(); g != nil {
		return g, nil
	}
	return c.refresh(ctx)
}

// dial re-resolves the gateway for every new connection. If the netmap now
// names another address, the dial fails with errGatewayMoved and roundTrip
// retries the request on the new address.
func (c *Connector) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	g, err := c.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(g.addr, addr) {
		return nil, fmt.Errorf("dial %s: %w (now %s)", addr, errGatewayMoved, g.addr)
	}
	conn, err := c.dialRaw(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial gateway: %w", err)
	}
	return conn, nil
}

// errNotReplayable is returned by a request builder asked for a second
// attempt when the first one consumed a body that cannot be replayed.
var errNotReplayable = errors.New("request body already consumed")

// roundTrip sends the request that build makes for the current gateway
// endpoint. A request that failed before it was written (dial error, gateway
// moved, write to a connection the gateway had already closed) is retried
// once on a fresh connection; build is called again for the retry and may
// refuse with errNotReplayable. A request that was written and then lost its
// connection is not retried: the gateway may have acted on it, and tool calls
// are not idempotent.
func (c *Connector) roundTrip(ctx context.Context, build func(ctx context.Context, endpoint string) (*http.Request, error)) (*http.Response, error) {
	var firstErr error
	for attempt := 0; attempt < 2; attempt++ {
		g, err := c.current(ctx)
		if err != nil {
			if firstErr != nil {
				return nil, firstErr
			}
			return nil, err
		}
		// delivered turns true once request headers were handed to a
		// connection, and false again if writing the request then failed:
		// a request whose write failed never fully reached a live peer.
		var delivered atomic.Bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteHeaders: func() { delivered.Store(true) },
			WroteRequest: func(info httptrace.WroteRequestInfo) {
				if info.Err != nil {
					delivered.Store(false)
				}
			},
		})
		req, err := build(tctx, g.endpoint)
		if err != nil {
			if firstErr != nil {
				return nil, firstErr
			}
			return nil, err
		}
		if c.tr.On() {
			tracing.Inject(ctx, req.Header)
		}
		resp, err := c.client.Do(req)
		if err == nil {
			return resp, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil || delivered.Load() {
			return nil, firstErr
		}
		if attempt == 0 {
			// Whatever failed, make the retry resolve again and use a new
			// connection.
			if _, rerr := c.refresh(ctx); rerr != nil {
				return nil, firstErr
			}
			c.log.Debug("retrying request on a fresh connection", "err", err)
		}
	}
	return nil, firstErr
}

// watchSlow logs, once, that the request for method is still waiting for
// the gateway's answer when it has waited slowAfter; call the returned
// function when the answer (or an error) is in.
func (c *Connector) watchSlow(method string) (stop func()) {
	if c.slowAfter < 0 {
		return func() {}
	}
	t := time.AfterFunc(c.slowAfter, func() {
		c.log.Warn(fmt.Sprintf("connect: still waiting for %s to answer %s after %s (a gateway whose MCP server is a stdio command starts one process per session, which can take seconds)",
			c.service, method, c.slowAfter))
	})
	return func() { t.Stop() }
}

// drainClose discards a little of what is left of body, so that an HTTP/1.1
// connection can be reused, and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	_ = body.Close()
}
