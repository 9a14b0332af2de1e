package auditstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
)

// BenchmarkStoreAppend measures sustained ingest with the hash chain, in
// batches of 1000 (one transaction each). One op is one event.
func BenchmarkStoreAppend(b *testing.B) {
	s, _, _ := testStore(b, Options{})
	ctx := context.Background()
	const batch = 1000
	events := make([]audit.Event, batch)
	n := 0
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		b.StopTimer()
		for j := range events {
			events[j] = testEvent(n)
			n++
		}
		b.StartTimer()
		if _, err := s.Append(ctx, events[:min(batch, b.N-i)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkQuery1M runs filtered queries over 1,000,000 stored events. The
// database is built once (about half a minute) before the sub-benchmarks;
// it runs only with -bench and not with -short.
func BenchmarkQuery1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-event database")
	}
	const total = 1_000_000
	s, db, _ := testStore(b, Options{CheckpointEvents: 100_000})
	ctx := context.Background()
	start := time.Now()
	events := make([]audit.Event, 10_000)
	for i := 0; i < total; i += len(events) {
		for j := range events {
			events[j] = testEvent(i + j)
			// One event a second, denies rarer and agents spread wider
			// than the tests do: the figures in BENCHMARKS.md.
			events[j].Time = testBase.Add(time.Duration(i+j) * time.Second)
			events[j].Src = fmt.Sprintf("spiffe://mesh.test/agent/a%d", (i+j)%50)
			events[j].Dst = fmt.Sprintf("spiffe://mesh.test/tool/t%d", (i+j)%3)
			events[j].Tool = fmt.Sprintf("tool%d", (i+j)%5)
			events[j].Decision = audit.Allow
			if (i+j)%20 == 7 {
				events[j].Decision = audit.Deny // 5% denied
			}
		}
		if _, err := s.Append(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d events in %v (%s)", total, time.Since(start).Round(time.Millisecond), filepath.Base(b.TempDir()))
	tests := []struct {
		name string
		f    Filter
	}{
		// The CLI's default: newest 100 matching.
		{"src+deny/newest100", Filter{Src: "agent:a7", Decision: audit.Deny, Limit: 100}},
		{"tool/last-hour", Filter{Tool: "tool3", Since: testBase.Add(total*time.Second - time.Hour)}},
		{"dst+deny/all", Filter{Dst: "tool:t1", Decision: audit.Deny}},
		{"follow/after-seq", Filter{AfterSeq: total - 1000, Ascending: true}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			rows := 0
			for b.Loop() {
				rows = 0
				if err := s.Query(ctx, tt.f, func(audit.Event) error { rows++; return nil }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows), "rows/op")
		})
	}
}
