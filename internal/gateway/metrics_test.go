package gateway

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/metrics"
)

// metricValue is m.Value, failing the test on an error.
func metricValue(t *testing.T, m *metrics.Set, name string, want map[string]string) float64 {
	t.Helper()
	v, err := m.Value(name, want)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGatewayRecordsLatenciesSessionsAndProcesses: with Config.Metrics a
// gateway observes each hop's latency and counts its open sessions and
// stdio processes (the decisions themselves are counted from the audit
// events, by the engine).
func TestGatewayRecordsLatenciesSessionsAndProcesses(t *testing.T) {
	for _, stdio := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "stdio"}[stdio], func(t *testing.T) {
			m := metrics.New()
			f := newFixture(t, fixtureOpts{stdio: stdio, config: func(c *Config) { c.Metrics = m }})
			ctx := testContext(t)
			cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
			defer cs.Close()
			if _, err := callText(ctx, cs, "echo", map[string]any{"text": "timed"}); err != nil {
				t.Fatal(err)
			}
			if _, err := callText(ctx, cs, "drop_table", nil); err == nil {
				t.Fatal("drop_table was allowed")
			}
			for _, hop := range []string{"decision", "upstream"} {
				if n := metricValue(t, m, "agentmesh_gateway_latency_seconds", map[string]string{"hop": hop}); n < 2 {
					t.Errorf("latency{hop=%s} has %v observations after initialize and a call", hop, n)
				}
			}
			if n := metricValue(t, m, "agentmesh_gateway_sessions", nil); n != 1 {
				t.Errorf("agentmesh_gateway_sessions = %v with one session open", n)
			}
			wantProcs := 0.0
			if stdio {
				wantProcs = 1
			}
			if n := metricValue(t, m, "agentmesh_gateway_stdio_processes", nil); n != wantProcs {
				t.Errorf("agentmesh_gateway_stdio_processes = %v, want %v", n, wantProcs)
			}
		})
	}
}
