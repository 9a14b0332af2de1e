package modelgw

import (
	"net/http"
	"testing"

	"github.com/agentmesh/agentmesh/internal/metrics"
)

// TestGatewayObservesEachHopsLatency: with Config.Metrics, the model
// gateway observes the decision of every admitted request, the upstream
// hop and the whole of a buffered answer, and the first chunk of a
// streamed one; a denied request reaches no upstream.
func TestGatewayObservesEachHopsLatency(t *testing.T) {
	m := metrics.New()
	f := newFixture(t, fixtureOpts{metrics: m})
	for _, c := range []struct{ model, extra string }{{"gpt-4o", ""}, {"gpt-4o", `"stream":true`}} {
		if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody(c.model, c.extra)); res.status != http.StatusOK {
			t.Fatalf("%s %s: status %d %s", c.model, c.extra, res.status, res.body)
		}
	}
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o-mini", "")); res.status != http.StatusForbidden {
		t.Fatalf("gpt-4o-mini: status %d, want 403", res.status)
	}
	for _, c := range []struct {
		name string
		hop  string
		want float64
	}{
		{"agentmesh_gateway_latency_seconds", "decision", 3},
		{"agentmesh_gateway_latency_seconds", "upstream", 2},
		{"agentmesh_gateway_latency_seconds", "total", 1},
		{"agentmesh_gateway_stream_first_byte_seconds", "", 1},
	} {
		labels := map[string]string{}
		if c.hop != "" {
			labels["hop"] = c.hop
		}
		if got, err := m.Value(c.name, labels); err != nil || got != c.want {
			t.Errorf("%s %v: %v observations (%v), want %v", c.name, labels, got, err, c.want)
		}
	}
}
