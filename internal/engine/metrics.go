package engine

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/metrics"
)

// MetricsConfig asks a gateway, connector or coordinator to serve
// Prometheus metrics (see package metrics for what they are).
type MetricsConfig struct {
	// Listen is the address of the /metrics endpoint; "" serves none. It
	// must be a loopback address unless AllowRemote is set.
	Listen string
	// AllowRemote accepts any listen address: whoever reaches it reads
	// the counters (no secrets, but how busy the node is and why it
	// refuses).
	AllowRemote bool
}

// ErrMetricsRemote matches the error for a non-loopback metrics address
// given without MetricsConfig.AllowRemote.
var ErrMetricsRemote = metrics.ErrRemote

// metricsEndpoint is an open metrics listener with its set; the zero
// value (no --metrics) records and serves nothing.
type metricsEndpoint struct {
	set *metrics.Set
	ln  net.Listener
}

// openMetrics opens the endpoint mc asks for, before anything else is
// started, so that a bad address is refused at once. A bad address wraps
// ErrConfig.
func openMetrics(mc MetricsConfig) (metricsEndpoint, error) {
	if mc.Listen == "" {
		return metricsEndpoint{}, nil
	}
	ln, err := metrics.Listen(mc.Listen, mc.AllowRemote)
	if errors.Is(err, httpserver.ErrAddress) || errors.Is(err, metrics.ErrRemote) {
		return metricsEndpoint{}, fmt.Errorf("%w: --metrics: %w", ErrConfig, err)
	} else if err != nil {
		return metricsEndpoint{}, fmt.Errorf("metrics: %w", err)
	}
	return metricsEndpoint{set: metrics.New(), ln: ln}, nil
}

// close closes a listener that was never served.
func (m metricsEndpoint) close() {
	if m.ln != nil {
		m.ln.Close()
	}
}

// serving is the ready signal of the endpoint, for component on node.
func (m metricsEndpoint) serving(component, node string) Serving {
	return Serving{Component: component, Node: node, API: "metrics", Network: "http", Addr: m.ln.Addr().String(), URL: metrics.URL(m.ln)}
}

// task serves the endpoint until ctx ends; nil when there is none.
func (m metricsEndpoint) task() task {
	return func(ctx context.Context) error {
		if m.ln == nil {
			return nil
		}
		return m.set.Serve(ctx, m.ln)
	}
}

// meteredRecorder counts each audit event a gateway records (decisions,
// model tokens) on its way to the recorder.
type meteredRecorder struct {
	rec admission.Recorder
	m   *metrics.Set
}

func (r meteredRecorder) Record(ctx context.Context, e *audit.Event) error {
	r.m.Event(e)
	return r.rec.Record(ctx, e)
}

// metered returns rec, counting its events into m when m is set.
func metered(rec admission.Recorder, m *metrics.Set) admission.Recorder {
	if m == nil {
		return rec
	}
	return meteredRecorder{rec: rec, m: m}
}
