package budget

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkBodyRead compares reading a request body through BodyReader
// (budget reservation, exact-size buffer) with the io.ReadAll the gateways
// used before, for small and large bodies of declared and undeclared
// length. Run: go test -run='^$' -bench=BodyRead -benchmem ./internal/budget
func BenchmarkBodyRead(b *testing.B) {
	br, err := NewBodyReader(4<<20, Bodies{})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 10, 256 << 10} {
		body := bytes.Repeat([]byte("x"), size)
		for _, declared := range []bool{true, false} {
			name := fmt.Sprintf("%dKiB/declared=%v", size>>10, declared)
			req := func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "/mcp", io.MultiReader(bytes.NewReader(body)))
				r.ContentLength = -1
				if declared {
					r.ContentLength = int64(size)
				}
				return r
			}
			b.Run("budget/"+name, func(b *testing.B) {
				w := httptest.NewRecorder()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					_, lease, err := br.Read(w, req(), "peer")
					if err != nil {
						b.Fatal(err)
					}
					lease.Release()
				}
			})
			b.Run("readall/"+name, func(b *testing.B) {
				w := httptest.NewRecorder()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					r := req()
					if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBudgetTakeRelease measures one reservation and its release
// under contention from every CPU, as every request makes one or two.
func BenchmarkBudgetTakeRelease(b *testing.B) {
	bg := New(1<<40, 1<<30)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, err := bg.Take("peer", 1)
			if err != nil {
				b.Fatal(err)
			}
			l.Release()
		}
	})
}
