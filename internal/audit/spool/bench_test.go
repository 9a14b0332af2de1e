package spool

import (
	"context"
	"testing"
)

// BenchmarkSpoolAppend measures what a gateway request pays to record one
// event: validation, encoding and the write into the segment file (the
// fsync runs in the syncer goroutine, once per SyncInterval at most).
func BenchmarkSpoolAppend(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		name := "serial"
		if parallel {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			e := testEvent(1)
			b.ReportAllocs()
			b.ResetTimer()
			if parallel {
				b.RunParallel(func(pb *testing.PB) {
					e := e
					for pb.Next() {
						if err := s.Append(ctx, &e); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for b.Loop() {
					if err := s.Append(ctx, &e); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := s.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkSpoolAppendSync is the cost of waiting for durability per event
// when many requests wait at once (they share fsyncs).
func BenchmarkSpoolAppendSync(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		e := testEvent(1)
		for pb.Next() {
			if err := s.AppendSync(ctx, &e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
