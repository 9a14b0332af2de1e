package aggregate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// CodeLocalRefused is the JSON-RPC error code of a request the local
// endpoint refused (data.reason not_local or local_auth), as the
// single-service connector answers it.
const CodeLocalRefused = -32052

// ServeStdio serves the aggregated server to one client over r and w
// (newline-delimited JSON-RPC) until ctx ends or the client closes r.
func (a *Aggregator) ServeStdio(ctx context.Context, r io.Reader, w io.Writer) error {
	t := &mcp.IOTransport{Reader: io.NopCloser(r), Writer: nopWriteCloser{w}}
	err := a.server.Run(ctx, t)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// ServeListener serves the aggregated server as Streamable HTTP at /mcp
// on ln, a loopback listener (with sessions before MCP 2026-07-28,
// statelessly from it on: sessionless.go), admitting only requests that pass the
// loopback guard for auth (local Host and Origin; the bearer token on
// TCP), until ctx ends. It closes ln.
func (a *Aggregator) ServeListener(ctx context.Context, ln net.Listener, auth loopback.Auth) error {
	guard, err := loopback.NewGuard(ln.Addr(), auth)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve listener: %w", err)
	}
	server := func(*http.Request) *mcp.Server { return a.server }
	// Sessions for clients before 2026-07-28; 2026-07-28 requests
	// without one statelessly, bounded by g (sessionless.go).
	stateful := mcp.NewStreamableHTTPHandler(server, &mcp.StreamableHTTPOptions{Logger: a.log})
	stateless := mcp.NewStreamableHTTPHandler(server, &mcp.StreamableHTTPOptions{Logger: a.log, Stateless: true, PropagateRequestCancellation: true})
	g := newGate()
	mux := http.NewServeMux()
	mux.Handle("/mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sessionless(r) {
			a.serveSessionless(w, r, g, stateless)
			return
		}
		stateful.ServeHTTP(w, r)
	}))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if why := guard.Check(r); why != "" {
				a.refuse(w, r, why)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if err := httpserver.Run(ctx, srv, ln); err != nil {
		return fmt.Errorf("serve listener: %w", err)
	}
	return nil
}

// refuse answers a request the guard refused, as the connector does.
func (a *Aggregator) refuse(w http.ResponseWriter, r *http.Request, why reason.Code) {
	status, msg := http.StatusForbidden, "local endpoint: Host or Origin is not local"
	if why == reason.LocalAuth {
		status, msg = http.StatusUnauthorized, "local endpoint: send Authorization: Bearer TOKEN with this endpoint's token"
		w.Header().Set("WWW-Authenticate", loopback.Challenge)
	}
	a.log.Warn("local endpoint refused a request", "reason", why, "method", r.Method, "remote", r.RemoteAddr)
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil,
		"error": map[string]any{"code": CodeLocalRefused, "message": msg, "data": map[string]reason.Code{"reason": why}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
