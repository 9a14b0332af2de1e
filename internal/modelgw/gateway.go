package modelgw

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes     = 4 << 20
	DefaultMaxResponseBytes = 16 << 20
)

// Config configures a Gateway.
type Config struct {
	// TLS is the server configuration from pki.NewServerTLS. Required by
	// Serve (Handler alone does not need it) unless Identifier is set.
	TLS *tls.Config
	// Identifier, when set, identifies requests that arrive without TLS,
	// on a listener whose transport authenticates and encrypts (a
	// tailnet): see admission.Identifier. With TLS nil, Serve then serves
	// plain HTTP (HTTP/1.1 and prior-knowledge HTTP/2). Nil refuses every
	// request without a certificate.
	Identifier admission.Identifier
	// Upstream is the base URL of the OpenAI-compatible API, such as
	// http://127.0.0.1:8000; request paths (/v1/...) are appended to it. A
	// trailing "/v1" is dropped, so http://127.0.0.1:8000/v1 works too.
	// Required.
	Upstream string
	// UpstreamHeader is added to every upstream request: the gateway's own
	// credential for the upstream (Authorization: Bearer ...), if any.
	UpstreamHeader http.Header
	// Transport overrides the HTTP transport to the upstream; nil uses a
	// keep-alive transport.
	Transport http.RoundTripper
	// Audit receives every decision. Required.
	Audit admission.Recorder
	// Refusals, when set, aggregates the refusals of callers that are not
	// admitted (admission.RecordRefusal); nil records each one through
	// Audit.
	Refusals *audit.Refusals
	// Conns bounds the connections that have not finished their TLS
	// handshake, as for the MCP gateway (admission.ServeOn); zero fields are
	// connlimit's defaults.
	Conns connlimit.Config
	// StateDir is where limit counters are kept (the log CountersFile,
	// see SyncInterval for what a crash can lose); "" keeps them in
	// memory, so a restart resets them.
	StateDir string
	// MaxBodyBytes bounds a request body (413 above it); zero is
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Bodies bounds the request bodies held in memory, in all and per
	// peer, and how long one may take to arrive, as for the MCP gateway
	// (package budget): over the budget a request is refused at once (429
	// or 503, over_budget), a body late past the deadline with 408
	// (body_timeout). Zero fields are budget's defaults: 16 and 64 times
	// MaxBodyBytes, 30 seconds.
	Bodies budget.Bodies
	// MaxRequestsPerPeer bounds the requests one caller has in flight at
	// once, streams included: one more is refused at once (429,
	// too_many_requests). Zero is budget.DefaultRequestsPerPeer.
	MaxRequestsPerPeer int
	// MaxResponseBytes bounds a non-streamed response that is buffered to
	// read its usage or filter a model list; a larger one passes through
	// unparsed (a model list is then refused). Zero is
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Logger is for operators; nil discards.
	Logger *slog.Logger
	// TracerProvider, when set, traces every admitted request (a server
	// span and the upstream hop) and propagates W3C trace context to the
	// upstream in headers; nil traces nothing. See package tracing.
	TracerProvider trace.TracerProvider
	// Metrics observes the latency of each hop (decision, upstream, total,
	// and the first byte of a streamed answer), as the MCP gateway does;
	// nil records nothing. (Requests and tokens are counted from the
	// audit events, by whoever wraps Audit.)
	Metrics *metrics.Set
	// Now is the clock of audit events, latencies and limit windows; nil is
	// time.Now.
	Now func() time.Time
}

// Gateway is the server side of model endpoints. Create it with New; it is
// an http.Handler (Handler) and serves mTLS itself with Serve.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	tr       tracing.Tracer
	upstream *url.URL
	client   *http.Client
	state    atomic.Pointer[admission.State]
	counters *counters
	bodies   *budget.BodyReader
	requests *budget.Budget // requests in flight, per caller
	serving  atomic.Bool

	// flights are the admitted requests in progress, re-checked by Update.
	mu      sync.Mutex
	flights map[*flight]struct{}
}

// flight is one admitted request in progress.
type flight struct {
	r      *http.Request // carries the verified TLS state
	cancel context.CancelCauseFunc
}

// New checks cfg, loads the limit counters from cfg.StateDir and returns a
// gateway enforcing initial (nil: the zero State, which denies everything).
func New(cfg Config, initial *admission.State) (*Gateway, error) {
	if cfg.Audit == nil {
		return nil, fmt.Errorf("new model gateway: %w: Audit recorder is required", ErrConfig)
	}
	u, err := url.Parse(cfg.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("new model gateway: %w: upstream %q: want http(s)://HOST[:PORT][/PREFIX]", ErrConfig, cfg.Upstream)
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/v1")
	u.RawPath = ""
	g := &Gateway{cfg: cfg, log: cfg.Logger, now: cfg.Now, upstream: u, flights: map[*flight]struct{}{},
		tr: tracing.NewTracer(cfg.TracerProvider, "modelgw")}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.cfg.MaxBodyBytes <= 0 {
		g.cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if g.cfg.MaxResponseBytes <= 0 {
		g.cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if g.bodies, err = budget.NewBodyReader(g.cfg.MaxBodyBytes, cfg.Bodies); err != nil {
		return nil, fmt.Errorf("new model gateway: %w: %w", ErrConfig, err)
	}
	switch {
	case cfg.MaxRequestsPerPeer < 0:
		return nil, fmt.Errorf("new model gateway: %w: MaxRequestsPerPeer must not be negative", ErrConfig)
	case cfg.MaxRequestsPerPeer == 0:
		g.cfg.MaxRequestsPerPeer = budget.DefaultRequestsPerPeer
	}
	g.requests = budget.New(0, int64(g.cfg.MaxRequestsPerPeer))
	tr := cfg.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			// Bodies are relayed verbatim and parsed for usage: ask for
			// them uncompressed.
			DisableCompression: true,
		}
	}
	g.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	path := ""
	if cfg.StateDir != "" {
		path = filepath.Join(cfg.StateDir, CountersFile)
	}
	g.counters, err = loadCounters(path)
	if err != nil {
		return nil, fmt.Errorf("new model gateway: %w", err)
	}
	g.Update(initial)
	return g, nil
}

// Update swaps the enforced state atomically (nil denies everything). New
// requests are decided under s; requests in progress keep the decision they
// got, except that those of peers s no longer admits (revoked, removed, of
// a stale incarnation, or no longer linked to this node by any grant) are
// cut at once, streams included, before Update returns.
func (g *Gateway) Update(s *admission.State) {
	if s == nil {
		s = &admission.State{}
	}
	g.state.Store(s)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recheckLocked(s)
}

// Recheck re-identifies the clients of every request in progress under the
// current state and cuts those that lost access, as Update does. Call it
// when the Identifier's transport reports that identities or capabilities
// changed (a tailnet's netmap); certificate clients only change on Update.
func (g *Gateway) Recheck(context.Context) {
	if g.cfg.Identifier == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recheckLocked(g.state.Load())
}

// recheckLocked cuts the requests in progress whose client s no longer
// admits. g.mu is held.
func (g *Gateway) recheckLocked(s *admission.State) {
	for f := range g.flights {
		who, why := admission.Identify(s, f.r, g.cfg.Identifier)
		if why == "" {
			// The delegation the request presented must still hold.
			_, why = s.Presented(f.r, who, g.now())
		}
		if why != "" {
			g.log.Info("model gateway: cutting request of peer that lost access", "peer", who.Src, "reason", why)
			f.cancel(&cutError{why: why})
		}
	}
}

// track registers an admitted request so that Update can cut it; the
// returned request carries the cancellable context, and done unregisters.
func (g *Gateway) track(r *http.Request) (*http.Request, func()) {
	ctx, cancel := context.WithCancelCause(r.Context())
	f := &flight{r: r.WithContext(ctx), cancel: cancel}
	g.mu.Lock()
	g.flights[f] = struct{}{}
	g.mu.Unlock()
	return f.r, func() {
		g.mu.Lock()
		delete(g.flights, f)
		g.mu.Unlock()
		cancel(nil)
	}
}

// Handler returns the HTTP handler (for tests and for mounting on a server
// whose TLS configuration verifies client certificates).
func (g *Gateway) Handler() http.Handler { return http.HandlerFunc(g.serveHTTP) }

// Serve accepts TLS connections (plain ones with an Identifier and no TLS)
// on ln until ctx ends, then shuts down,
// waiting for requests in flight to finish (streams are cut when ctx ends,
// because their request contexts derive from it), closes the gateway
// (Close) and returns nil. It closes ln.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if g.cfg.TLS == nil && g.cfg.Identifier == nil {
		ln.Close()
		return fmt.Errorf("serve: %w: TLS configuration is required", ErrConfig)
	}
	if !g.serving.CompareAndSwap(false, true) {
		ln.Close()
		return fmt.Errorf("serve: %w", ErrServing)
	}
	srv := &http.Server{
		Handler:           g.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	conns := g.cfg.Conns
	conns.OnRefuse = admission.ConnRefusals(g.cfg.Refusals, g.cfg.Audit, g.now, func() string { return g.state.Load().Dst() }, g.log)
	ln = admission.ServeOn(srv, ln, g.cfg.TLS, conns)
	err := httpserver.Run(ctx, srv, ln)
	if t, ok := g.client.Transport.(*http.Transport); ok && g.cfg.Transport == nil {
		t.CloseIdleConnections()
	}
	// No request is in flight any more: make the counters durable.
	if cerr := g.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("serve: %w", cerr)
	}
	return err
}

// Close fsyncs and closes the limit counters, so that a clean stop loses
// no count; requests under a limit are refused (limits_unavailable) from
// then on. Serve calls it when it returns; a user of Handler alone calls
// it once the handler has stopped. It is idempotent.
func (g *Gateway) Close() error { return g.counters.close() }
