package gateway

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/metrics"
)

// metricValue sums the samples of the metric name whose labels include
// want: a counter's or gauge's value, a histogram's count.
func metricValue(t *testing.T, s *metrics.Set, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			n := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					n++
				}
			}
			if n != len(want) {
				continue
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
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
