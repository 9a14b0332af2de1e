package modelgw

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// benchRequest sends one chat completion to base and returns the time to
// the first byte of the body (for a stream: its first data line) and the
// time to the end of the response.
func benchRequest(b *testing.B, c *http.Client, base, body string) (ttfb, total time.Duration) {
	start := time.Now()
	resp, err := c.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadSlice('\n'); err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		b.Fatal(err)
	}
	ttfb = time.Since(start)
	if _, err := io.Copy(io.Discard, br); err != nil {
		b.Fatal(err)
	}
	return ttfb, time.Since(start)
}

// BenchmarkAddedLatency measures, in the same run and alternating request
// by request, a chat completion sent directly to the upstream and one sent
// through the local proxy (loopback HTTP) and the model gateway (mTLS,
// policy, audit). It reports the mean of each, the difference and the
// ratio; "nonstream" uses the time to the end of the response, "stream"
// the time to the first SSE chunk.
func BenchmarkAddedLatency(b *testing.B) {
	limited := strings.Replace(basePolicy, `"grants"`,
		`"limits": [{"src": ["agent:fraud"], "dst": ["model:llm"], "rpm": 1000000000, "tokens_per_day": 1000000000}], "grants"`, 1)
	for _, bc := range []struct {
		name, extra string
		stream      bool
		limited     bool
	}{
		{"nonstream", "", false, false},
		{"stream", streamWithUsage, true, false},
		// With a limit whose counters persist in a state directory.
		{"nonstream-limited", "", false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			o := fixtureOpts{}
			if bc.limited {
				o.policy, o.stateDir = limited, b.TempDir()
			}
			f := newFixture(b, o)
			mesh := f.local(f.fraud)
			c := localClient(b, &http.Transport{MaxIdleConnsPerHost: 4})
			body := chatBody("gpt-4o", bc.extra)
			// Warm both paths: connections, TLS sessions.
			benchRequest(b, c, f.upURL, body)
			benchRequest(b, c, mesh, body)
			var direct, via time.Duration
			b.ResetTimer()
			for range b.N {
				dt, dl := benchRequest(b, c, f.upURL, body)
				mt, ml := benchRequest(b, c, mesh, body)
				if bc.stream {
					direct, via = direct+dt, via+mt
				} else {
					direct, via = direct+dl, via+ml
				}
			}
			b.StopTimer()
			n := float64(b.N)
			d, m := float64(direct.Microseconds())/n, float64(via.Microseconds())/n
			b.ReportMetric(d, "direct-us")
			b.ReportMetric(m, "mesh-us")
			b.ReportMetric(m-d, "added-us")
			if d > 0 {
				b.ReportMetric(m/d, "ratio")
			}
		})
	}
}

// BenchmarkLimitedRequest measures what a model `limits` entry costs a
// request: through one gateway with its counters in a state directory,
// alternating request by request, agent:fraud's chat completions are
// counted under a limit and agent:other's (same model, same grant shape)
// are not. It reports the mean of each, the difference and the ratio.
func BenchmarkLimitedRequest(b *testing.B) {
	doc := `{
  "limits": [{"src": ["agent:fraud"], "dst": ["model:llm"], "rpm": 1000000000, "tokens_per_day": 1000000000}],
  "grants": [{"src": ["agent:fraud", "agent:other"], "dst": ["model:llm"], "models": ["gpt-4o"]}],
}`
	f := newFixture(b, fixtureOpts{policy: doc, stateDir: b.TempDir()})
	limited, unlimited := f.local(f.fraud), f.local(f.other)
	c := localClient(b, &http.Transport{MaxIdleConnsPerHost: 4})
	body := chatBody("gpt-4o", "")
	benchRequest(b, c, limited, body)
	benchRequest(b, c, unlimited, body)
	var lim, unl time.Duration
	b.ResetTimer()
	for range b.N {
		_, u := benchRequest(b, c, unlimited, body)
		_, l := benchRequest(b, c, limited, body)
		lim, unl = lim+l, unl+u
	}
	b.StopTimer()
	n := float64(b.N)
	l, u := float64(lim.Nanoseconds())/n/1e3, float64(unl.Nanoseconds())/n/1e3
	b.ReportMetric(u, "unlimited-us")
	b.ReportMetric(l, "limited-us")
	b.ReportMetric(l-u, "added-us")
	if u > 0 {
		b.ReportMetric(l/u, "ratio")
	}
}
