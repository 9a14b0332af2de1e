package gateway

import (
	"net/http"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

// isEventStream reports whether a response head h starts an event stream
// (SSE), whose time to first byte is measured instead of its total time.
func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	return len(ct) >= len(mcpwire.ContentTypeSSE) && strings.EqualFold(ct[:len(mcpwire.ContentTypeSSE)], mcpwire.ContentTypeSSE)
}

// metricsNow is the clock of the metrics' latencies: now when the gateway
// records metrics, else the zero time, so that a gateway without metrics
// reads no clock for them.
func (g *Gateway) metricsNow() time.Time {
	if g.cfg.Metrics == nil {
		return time.Time{}
	}
	return g.now()
}
