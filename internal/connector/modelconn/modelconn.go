// Package modelconn is the agent's side of a model endpoint: what
// `agentmesh connect model:NAME --listen 127.0.0.1:PORT` runs. An
// [Endpoint] is a loopback-only HTTP reverse proxy that relays
// OpenAI-compatible requests to the model gateway (package modelgw) with
// the node's identity, so that an unmodified OpenAI client works with
// OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 and the endpoint's token as
// OPENAI_API_KEY.
//
// It is client code, a sibling of the MCP connector (package connector)
// rather than a part of it: both dial the gateway through the one client
// transport (package transport) and admit their owner through the same
// loopback.Guard, but the connector is an MCP relay (sessions, stdio,
// JSON-RPC errors) and this is a plain reverse proxy of another protocol
// with OpenAI-shaped errors (package modelwire).
//
// # Threat model
//
// As for the connector's local endpoint (see package connector):
//
//   - Whoever talks to the endpoint acts as the agent. It listens on
//     loopback or a private Unix socket only, and admits its owner only: a
//     bearer token on TCP (refused: 401 authentication_error, reason
//     local_auth), or the socket's file mode; a foreign Host or Origin is
//     403 not_local (DNS rebinding). Refusals never reach the mesh.
//   - The mesh identity is the only credential that leaves the machine:
//     Authorization, Cookie, Api-Key, X-Api-Key, Proxy-Authorization (the
//     token among them) and Origin are dropped before a request is relayed.
//   - The gateway is reached through transport.New: TLS 1.3, a server
//     checked by a verifier of its own (the CLI's is transport.ServerIs:
//     the SPIFFE ID the netmap names), or a tailnet dialer.
package modelconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/modelwire"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/tracing"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// Errors returned by New and Serve; match them with errors.Is.
var (
	// ErrConfig: the configuration is incomplete or unsafe.
	ErrConfig = errors.New("modelconn: invalid configuration")
	// ErrNotLoopback: Serve was asked to serve on a non-loopback address.
	ErrNotLoopback = loopback.ErrNotLoopback
	// ErrNoToken: Serve was asked to serve TCP without a token or an
	// explicit opt-out.
	ErrNoToken = loopback.ErrNoToken
)

// Config configures an Endpoint.
type Config struct {
	// Resolve returns the model gateway's base URL (https://host:port); it
	// is called for every request so that netmap changes are picked up.
	// Required.
	Resolve func(ctx context.Context) (string, error)
	// TLS is the client configuration with the node certificate and the
	// check of the gateway's identity (transport.ClientTLS). It is cloned;
	// TLS 1.3 is enforced, and a configuration that does not check the
	// server with a verifier of its own is refused. Required unless Dial
	// is set.
	TLS *tls.Config
	// Dial, when set, reaches the gateway over a transport that
	// authenticates and encrypts by itself (tailnet.Node.Dial): TLS must
	// then be nil and Resolve returns http://host:port, spoken as HTTP/2
	// without TLS inside that transport.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger is for operators; nil discards.
	Logger *slog.Logger
	// TracerProvider, when set, traces every request relayed to the
	// gateway as a client span continuing the client's W3C trace context
	// (traceparent header), and sends the span's context to the gateway;
	// nil traces nothing (a client's traceparent then passes as it came).
	TracerProvider trace.TracerProvider
}

// Endpoint is the local side of a model endpoint.
type Endpoint struct {
	resolve   func(context.Context) (string, error)
	scheme    string // of gateway URLs: https, or http with Config.Dial
	log       *slog.Logger
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	tr        tracing.Tracer
}

type gatewayKey struct{}

// dropHeaders never leave the machine: credentials the agent's SDK sends
// (none is a mesh credential) and the browser's Origin.
var dropHeaders = []string{"Authorization", "Cookie", "Api-Key", "X-Api-Key", "Proxy-Authorization", "Origin"}

// New checks cfg and returns an Endpoint. It does not contact the gateway.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Resolve == nil {
		return nil, fmt.Errorf("%w: Resolve is required", ErrConfig)
	}
	tc := transport.Config{TLS: cfg.TLS, Dial: cfg.Dial}
	tr, err := transport.New(tc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	e := &Endpoint{resolve: cfg.Resolve, log: cfg.Logger, scheme: tc.Scheme(), transport: tr,
		tr: tracing.NewTracer(cfg.TracerProvider, "modelconn")}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.proxy = &httputil.ReverseProxy{
		Transport:     e.transport,
		FlushInterval: -1, // SSE chunks go to the client as they arrive
		Rewrite: func(pr *httputil.ProxyRequest) {
			base := pr.In.Context().Value(gatewayKey{}).(*url.URL)
			pr.SetURL(base)
			pr.Out.Host = base.Host
			// The agent's API key (the endpoint's token, or whatever its
			// SDK insists on) is not a mesh credential and never leaves
			// the machine.
			for _, k := range dropHeaders {
				pr.Out.Header.Del(k)
			}
			if e.tr.On() {
				tracing.Inject(pr.In.Context(), pr.Out.Header)
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if e.tr.On() {
				trace.SpanFromContext(resp.Request.Context()).SetAttributes(attribute.Int(tracing.AttrStatusCode, resp.StatusCode))
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			trace.SpanFromContext(r.Context()).SetStatus(codes.Error, "gateway unreachable")
			e.log.Warn("local model endpoint: gateway request failed", "err", err)
			unreachable(w, "the model gateway could not be reached")
		},
	}
	return e, nil
}

// unreachable answers a request that could not be relayed to the model
// gateway (gateway_unreachable: the gateway, not its upstream, failed).
func unreachable(w http.ResponseWriter, msg string) {
	modelwire.WriteError(w, http.StatusBadGateway, modelwire.ErrorBody{
		Error:  modelwire.ErrorDetail{Type: "api_error", Code: reason.GatewayUnreachable, Message: msg},
		Reason: reason.GatewayUnreachable})
}

// Handler returns the local HTTP handler for a listener that guard guards
// (loopback.NewGuard with the listener's address).
func (e *Endpoint) Handler(guard *loopback.Guard) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if why := guard.Check(r); why != "" {
			e.refuse(w, r, why)
			return
		}
		raw, err := e.resolve(r.Context())
		var base *url.URL
		if err == nil {
			base, err = url.Parse(raw)
		}
		if err != nil || base.Scheme != e.scheme || base.Host == "" {
			e.log.Warn("local model endpoint: resolving the gateway failed", "err", err, "url", raw)
			// Resolve may say why (connector.ResolveError): the client
			// gets that reason and text.
			var why interface{ Reason() reason.Code }
			if errors.As(err, &why) {
				modelwire.WriteError(w, http.StatusBadGateway, modelwire.ErrorBody{
					Error:  modelwire.ErrorDetail{Type: "api_error", Code: why.Reason(), Message: err.Error()},
					Reason: why.Reason()})
				return
			}
			unreachable(w, "the model gateway could not be resolved")
			return
		}
		base.Path, base.RawPath = "", ""
		ctx := context.WithValue(r.Context(), gatewayKey{}, base)
		if e.tr.On() {
			// The client is this node's own (it holds the endpoint's
			// token or socket): its trace context is the parent, and
			// nothing more.
			ctx, _ = tracing.Extract(ctx, r.Header)
			var span trace.Span
			ctx, span = e.tr.Start(ctx, r.Method+" "+r.URL.Path, trace.SpanKindClient,
				attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path))
			defer span.End()
		}
		e.proxy.ServeHTTP(w, r.WithContext(ctx))
	})
}

// refuse answers a request the local endpoint does not serve in the OpenAI
// error shape, with the reason code; it never reaches the gateway. A
// missing or wrong token is 401, which OpenAI clients surface as an
// authentication error about their API key: the token is that key.
func (e *Endpoint) refuse(w http.ResponseWriter, r *http.Request, why reason.Code) {
	e.log.Warn("local model endpoint refused a request", "reason", why, "method", r.Method, "remote", r.RemoteAddr)
	if why == reason.LocalAuth {
		w.Header().Set("WWW-Authenticate", loopback.Challenge)
		modelwire.WriteError(w, http.StatusUnauthorized, modelwire.ErrorBody{Error: modelwire.ErrorDetail{Type: "authentication_error", Code: why,
			Message: "this endpoint requires its token as the API key (Authorization: Bearer TOKEN)"}, Reason: why})
		return
	}
	modelwire.WriteError(w, http.StatusForbidden, modelwire.ErrorBody{Error: modelwire.ErrorDetail{Type: "permission_denied", Code: why,
		Message: "this endpoint serves local clients only"}, Reason: why})
}

// Serve serves the local endpoint on ln (a loopback TCP listener or a Unix
// socket from loopback.Listen) until ctx ends, with auth binding it to its
// owner: on TCP every request must carry auth.Token as its API key (the
// zero Auth fails with ErrNoToken) unless auth.NoToken opts out. It closes
// ln.
func (e *Endpoint) Serve(ctx context.Context, ln net.Listener, auth loopback.Auth) error {
	guard, err := loopback.NewGuard(ln.Addr(), auth)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve local model endpoint: %w", err)
	}
	srv := &http.Server{
		Handler:           e.Handler(guard),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	err = httpserver.Run(ctx, srv, ln)
	e.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("serve local model endpoint: %w", err)
	}
	return nil
}

// Close releases idle connections to the gateway. It is idempotent.
func (e *Endpoint) Close() error {
	e.transport.CloseIdleConnections()
	return nil
}
