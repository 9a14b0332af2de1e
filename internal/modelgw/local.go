package modelgw

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

	"agentmesh/internal/loopback"
	"agentmesh/internal/reason"
)

// LocalConfig configures a Local.
type LocalConfig struct {
	// Resolve returns the model gateway's base URL (https://host:port); it
	// is called for every request so that netmap changes are picked up.
	// Required.
	Resolve func(ctx context.Context) (string, error)
	// TLS is the client configuration with the node certificate. It is
	// cloned; TLS 1.3 is enforced. Required unless Dial is set.
	TLS *tls.Config
	// Dial, when set, reaches the gateway over a transport that
	// authenticates and encrypts by itself (tailnet.Node.Dial): TLS must
	// then be nil and Resolve returns http://host:port, spoken as HTTP/2
	// without TLS inside that transport.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger is for operators; nil discards.
	Logger *slog.Logger
}

// Local is the client side of a model endpoint: a loopback HTTP server that
// relays OpenAI-compatible requests to the model gateway over mTLS.
type Local struct {
	resolve   func(context.Context) (string, error)
	scheme    string // of gateway URLs: https, or http with LocalConfig.Dial
	log       *slog.Logger
	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

type gatewayKey struct{}

// localDropHeaders never leave the machine: credentials the agent's SDK
// sends (none is a mesh credential) and the browser's Origin.
var localDropHeaders = []string{"Authorization", "Cookie", "Api-Key", "X-Api-Key", "Proxy-Authorization", "Origin"}

// NewLocal checks cfg and returns a Local. It does not contact the gateway.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.Resolve == nil {
		return nil, fmt.Errorf("new local model endpoint: %w: Resolve is required", ErrConfig)
	}
	l := &Local{resolve: cfg.Resolve, log: cfg.Logger, scheme: "https"}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.transport = &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		Protocols:           new(http.Protocols),
	}
	switch {
	case cfg.Dial != nil && cfg.TLS != nil:
		return nil, fmt.Errorf("new local model endpoint: %w: Dial and TLS are exclusive (the dialer's transport is the credential)", ErrConfig)
	case cfg.Dial != nil:
		l.scheme = "http"
		l.transport.DialContext = cfg.Dial
		l.transport.Protocols.SetUnencryptedHTTP2(true)
	case cfg.TLS == nil:
		return nil, fmt.Errorf("new local model endpoint: %w: TLS is required (the node identity is the credential)", ErrConfig)
	default:
		tlsCfg := cfg.TLS.Clone()
		if len(tlsCfg.Certificates) == 0 && tlsCfg.GetClientCertificate == nil {
			return nil, fmt.Errorf("new local model endpoint: %w: TLS has no client certificate", ErrConfig)
		}
		if tlsCfg.MinVersion < tls.VersionTLS13 {
			tlsCfg.MinVersion = tls.VersionTLS13
		}
		tlsCfg.NextProtos = nil
		l.transport.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		l.transport.TLSClientConfig = tlsCfg
		l.transport.TLSHandshakeTimeout = 10 * time.Second
		l.transport.Protocols.SetHTTP1(true)
		l.transport.Protocols.SetHTTP2(true)
	}
	l.proxy = &httputil.ReverseProxy{
		Transport:     l.transport,
		FlushInterval: -1, // SSE chunks go to the client as they arrive
		Rewrite: func(pr *httputil.ProxyRequest) {
			base := pr.In.Context().Value(gatewayKey{}).(*url.URL)
			pr.SetURL(base)
			pr.Out.Host = base.Host
			// The agent's API key (the endpoint's token, or whatever its
			// SDK insists on) is not a mesh credential and never leaves
			// the machine.
			for _, k := range localDropHeaders {
				pr.Out.Header.Del(k)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			l.log.Warn("local model endpoint: gateway request failed", "err", err)
			writeError(w, http.StatusBadGateway, ErrorBody{Error: ErrorDetail{Type: "api_error", Code: reason.UpstreamError,
				Message: "the model gateway could not be reached"}, Reason: reason.UpstreamError})
		},
	}
	return l, nil
}

// Handler returns the local HTTP handler for a listener that guard guards
// (loopback.NewGuard with the listener's address).
func (l *Local) Handler(guard *loopback.Guard) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if reason := guard.Check(r); reason != "" {
			l.refuse(w, r, reason)
			return
		}
		raw, err := l.resolve(r.Context())
		var base *url.URL
		if err == nil {
			base, err = url.Parse(raw)
		}
		if err != nil || base.Scheme != l.scheme || base.Host == "" {
			l.log.Warn("local model endpoint: resolving the gateway failed", "err", err, "url", raw)
			writeError(w, http.StatusBadGateway, ErrorBody{Error: ErrorDetail{Type: "api_error", Code: reason.UpstreamError,
				Message: "the model gateway could not be resolved"}, Reason: reason.UpstreamError})
			return
		}
		base.Path, base.RawPath = "", ""
		l.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), gatewayKey{}, base)))
	})
}

// refuse answers a request the local endpoint does not serve in the OpenAI
// error shape, with the reason code; it never reaches the gateway. A
// missing or wrong token is 401, which OpenAI clients surface as an
// authentication error about their API key: the token is that key.
func (l *Local) refuse(w http.ResponseWriter, r *http.Request, why reason.Code) {
	l.log.Warn("local model endpoint refused a request", "reason", why, "method", r.Method, "remote", r.RemoteAddr)
	if why == reason.LocalAuth {
		w.Header().Set("WWW-Authenticate", loopback.Challenge)
		writeError(w, http.StatusUnauthorized, ErrorBody{Error: ErrorDetail{Type: "authentication_error", Code: why,
			Message: "this endpoint requires its token as the API key (Authorization: Bearer TOKEN)"}, Reason: why})
		return
	}
	writeError(w, http.StatusForbidden, ErrorBody{Error: ErrorDetail{Type: "permission_denied", Code: why,
		Message: "this endpoint serves local clients only"}, Reason: why})
}

// Serve serves the local endpoint on ln (a loopback TCP listener or a Unix
// socket from loopback.Listen) until ctx ends, with auth binding it to its
// owner: on TCP every request must carry auth.Token as its API key (the
// zero Auth fails with loopback.ErrNoToken) unless auth.NoToken opts out.
// It closes ln.
func (l *Local) Serve(ctx context.Context, ln net.Listener, auth loopback.Auth) error {
	guard, err := loopback.NewGuard(ln.Addr(), auth)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve local model endpoint: %w", err)
	}
	srv := &http.Server{
		Handler:           l.Handler(guard),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	err = nil
	select {
	case <-ctx.Done():
	case err = <-errc:
		errc = nil
	}
	shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		srv.Close()
	}
	if errc != nil {
		<-errc
	}
	l.transport.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close releases idle connections to the gateway. It is idempotent.
func (l *Local) Close() error {
	l.transport.CloseIdleConnections()
	return nil
}
