package gateway

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkToolCall measures one tools/call from an SDK client to an SDK
// server directly and through the gateway (mTLS in, keep-alive HTTP out),
// interleaved in the same run, and reports both medians and the difference;
// in-process, the gateway calls the server's handler in its own process
// (HandlerUpstream, the mesh library's server) instead.
func BenchmarkToolCall(b *testing.B) {
	for _, k := range httpKinds {
		b.Run(k.name, func(b *testing.B) { benchmarkToolCall(b, k.opts) })
	}
}

func benchmarkToolCall(b *testing.B, o fixtureOpts) {
	f := newFixture(b, o)
	ctx := testContext(b)
	viaGateway := f.connect(ctx, f.fraud, "2025-11-25", nil)
	client := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
	direct, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: f.up.URL, HTTPClient: &http.Client{}}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	args := map[string]any{"text": "bench"}
	call := func(cs *mcp.ClientSession) time.Duration {
		start := time.Now()
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: args}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	// Warm both paths.
	for range 20 {
		call(direct)
		call(viaGateway)
	}
	d := make([]time.Duration, 0, b.N)
	g := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		d = append(d, call(direct))
		g = append(g, call(viaGateway))
	}
	b.StopTimer()
	pd, pg := p50(d), p50(g)
	b.ReportMetric(float64(pd.Nanoseconds()), "direct-p50-ns")
	b.ReportMetric(float64(pg.Nanoseconds()), "gateway-p50-ns")
	b.ReportMetric(float64(pg-pd)/1e3, "added-p50-µs")
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestGatewayLosesNoCalls runs GATEWAY_LOSS_CALLS tool calls (for example
// 20000) through the gateway to an upstream that closes idle keep-alive
// connections after a millisecond, from 8 concurrent sessions, and fails on
// any failed call. It is skipped unless the variable is set.
func TestGatewayLosesNoCalls(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GATEWAY_LOSS_CALLS"))
	if n <= 0 {
		t.Skip("set GATEWAY_LOSS_CALLS=20000 to run")
	}
	f := newFixture(t, fixtureOpts{upstreamIdle: time.Millisecond})
	ctx := testContext(t)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	const workers = 8
	var failed, done atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for w := range workers {
		cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if _, err := callText(ctx, cs, "echo", map[string]any{"text": "x"}); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprint(err))
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls, %d failed", done.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed; first: %v", failed.Load(), done.Load(), first.Load())
	}
}
