package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/tracing"
)

var (
	// ErrConfig: the configuration is incomplete or contradictory; the
	// message says what to change.
	ErrConfig = errors.New("invalid configuration")
	// ErrNoTailnet: the tailnet mode was asked for in a binary built
	// without it (-tags notailnet).
	ErrNoTailnet = errors.New("this agentmesh was built without the tailnet mode (-tags notailnet)")
)

// Serving describes one endpoint that started serving: a gateway's mTLS
// or tailnet listener, a connector's local endpoint, the coordinator's
// API. Ready callbacks receive it once the endpoint accepts connections;
// the JSON form is the machine-readable ready signal of the command line.
type Serving struct {
	// Component is "gateway", "connector" or "coordinator".
	Component string `json:"component"`
	// Node is the SPIFFE ID of the node serving ("" for a tailnet
	// connector run without a state directory).
	Node string `json:"node,omitempty"`
	// API is "mcp", "model" (an OpenAI-compatible API), "control" or
	// "metrics" (the Prometheus endpoint of --metrics).
	API string `json:"api"`
	// Network is "mtls", "tailnet", "http" (a loopback TCP endpoint),
	// "unix" or "stdio".
	Network string `json:"network"`
	// Addr is the listener's address ("" for stdio).
	Addr string `json:"addr,omitempty"`
	// URL is what clients use ("" for stdio).
	URL string `json:"url,omitempty"`
	// Service is the service a connector reaches.
	Service string `json:"service,omitempty"`
	// TokenFile holds the bearer token a connector's TCP endpoint
	// requires; "" when it requires none (a Unix socket, or NoToken).
	TokenFile string `json:"token_file,omitempty"`
	// NoToken is set when a TCP endpoint was opened without a token:
	// every local user can act as the node through it.
	NoToken bool `json:"no_token,omitempty"`
	// Rules says, for a tailnet gateway, where tailnet callers' tool rules
	// come from.
	Rules string `json:"rules,omitempty"`
	// Upstream is a model gateway's upstream base URL.
	Upstream string `json:"upstream,omitempty"`
	// Traces is where the component exports its spans (OTLP/HTTP), ""
	// when it does not (see package tracing).
	Traces string `json:"traces,omitempty"`
	// AdminState is, for the coordinator, the state directory of the
	// first admin identity (what admin commands take as --state).
	AdminState string `json:"admin_state,omitempty"`
}

// ready calls f with s when f is set.
func ready(f func(Serving), s Serving) {
	if f != nil {
		f(s)
	}
}

// startTraces returns the tracing of one component as the environment
// configures it, and the function that flushes and stops it.
func startTraces(ctx context.Context, component, node string, log *slog.Logger) (*tracing.Provider, func(), error) {
	tp, err := tracing.FromEnv(ctx, tracing.Options{Component: component, Node: node})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return tp, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracing.ShutdownTimeout)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("traces: the last spans may not have reached the collector", "err", err)
		}
	}, nil
}

// logger returns l, or one that discards.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// logWriter turns a child process's stderr into log records.
type logWriter struct {
	log    *slog.Logger
	prefix string
}

var _ io.Writer = (*logWriter)(nil)

func (w *logWriter) Write(p []byte) (int, error) {
	w.log.Info(w.prefix, "stderr", string(p))
	return len(p), nil
}
