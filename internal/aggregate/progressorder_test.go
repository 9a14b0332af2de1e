package aggregate

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// wireRecorder counts, in the SSE responses of an HTTP client, the
// progress notifications under token "tok" that come before their
// stream's response (sseCounter stops at the response).
type wireRecorder struct {
	next http.RoundTripper
	p    *progressRoutes
}

func (w wireRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	return countingRoundTripper{next: w.next, p: w.p}.RoundTrip(r)
}

func (w wireRecorder) reset() {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	w.p.m["tok"] = &progressRoute{wake: make(chan struct{}, 1)}
}

func (w wireRecorder) before() int {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.m["tok"].seen
}

// httpUpstream serves up over Streamable HTTP on a loopback port until
// the test ends, and returns an aggregator whose services all are it.
func httpUpstream(t *testing.T, up *mcp.Server) *Aggregator {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return up }, nil)}
	go srv.Serve(ln)
	tr := &http.Transport{}
	a, err := New(Config{SPIFFEID: "spiffe://test/agent/bot", Transport: func(Service) (mcp.Transport, error) {
		return &mcp.StreamableClientTransport{Endpoint: "http://" + ln.Addr().String() + "/mcp", MaxRetries: -1, HTTPClient: &http.Client{Transport: tr}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		tr.CloseIdleConnections()
		srv.Close()
	})
	return a
}

// TestProgressReachesAnHTTPClientBeforeTheAnswer: over the aggregated
// HTTP endpoint, every progress notification a service sends before its
// answer is on the client's response stream before the answer, and
// reaches the client under its token: with the service over Streamable
// HTTP (as gateways are) and in memory, for clients before 2026-07-28
// and 2026-07-28 ones. Before the aggregator waited for them, the SDK's
// client could hand the service's answer to the call before its
// progress handler had run, and the last notifications were lost.
func TestProgressReachesAnHTTPClientBeforeTheAnswer(t *testing.T) {
	for _, upstream := range []string{"http", "memory"} {
		for _, version := range []string{protocol2025, protocol2026} {
			t.Run(upstream+"/"+version, func(t *testing.T) {
				var a *Aggregator
				if upstream == "http" {
					a = httpUpstream(t, routedUpstream(make(chan string, 2)))
				} else {
					a, _, _ = newFixture(t, map[string]*mcp.Server{"svc": routedUpstream(make(chan string, 2))})
				}
				a.Update(Snapshot{Services: []Service{{Name: "svc", Addr: "1"}}})
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := a.WaitSettled(ctx); err != nil {
					t.Fatal(err)
				}
				e := serveHTTP(t, a)
				rec := wireRecorder{next: e.tr, p: newProgressRoutes(a)}
				progress := make(chan *mcp.ProgressNotificationParams, 16)
				cl := mcp.NewClient(&mcp.Implementation{Name: "http", Version: "1"}, &mcp.ClientOptions{
					ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
						progress <- req.Params
					},
				})
				cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.url, MaxRetries: -1,
					HTTPClient: &http.Client{Transport: rec}}, &mcp.ClientSessionOptions{ProtocolVersion: version})
				if err != nil {
					t.Fatal(err)
				}
				defer cs.Close()
				for i := range 25 {
					rec.reset()
					if got := callText(t, cs, &mcp.CallToolParams{Name: "svc__progress", Meta: mcp.Meta{"progressToken": "tok"}}); got != "done" {
						t.Fatalf("progress answered %q", got)
					}
					if n := rec.before(); n != 3 {
						t.Fatalf("call %d: %d progress notifications came before the answer on the client's stream, want 3", i, n)
					}
					for n := range 3 {
						select {
						case p := <-progress:
							if p.ProgressToken != "tok" || p.Progress != float64(n+1) || p.Total != 3 {
								t.Fatalf("call %d: progress %+v, want %d/3 under tok", i, p, n+1)
							}
						case <-ctx.Done():
							t.Fatalf("call %d: got %d progress notifications, want 3", i, n)
						}
					}
				}
			})
		}
	}
}

// TestSSECounterCountsProgressAsTheSDKReadsIt: the scanner counts the
// progress notifications of an SSE stream however its bytes are split,
// with the SDK's SSE rules (CRLF, data split over lines, named events
// ignored), and none after the stream's response.
func TestSSECounterCountsProgressAsTheSDKReadsIt(t *testing.T) {
	prog := func(tok string) string {
		return `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"` + tok + `","progress":1}}`
	}
	stream := "event: message\r\nid: 1\r\ndata: " + prog("agentmesh-1") + "\r\n\r\n" +
		": a comment\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\n" + "data: \"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"agentmesh-1\",\"progress\":2}}\n\n" +
		"event: other\ndata: " + prog("agentmesh-1") + "\n\n" +
		"data: " + prog("agentmesh-2") + "\n\n" +
		// An event too long to scan, whose later line is on its own a
		// progress notification: not counted.
		"data: \"" + strings.Repeat("x", maxScannedEvent) + "\"\n" + "data: " + prog("agentmesh-1") + "\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"agentmesh-1\",\"progress\":3}}\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n" +
		"data: " + prog("agentmesh-1") + "\n\n"
	for _, chunk := range []int{1, 3, 7, 1 << 20} {
		p := newProgressRoutes(nil)
		p.m["agentmesh-1"] = &progressRoute{}
		c := &sseCounter{ReadCloser: io.NopCloser(&chunked{s: stream, n: chunk}), p: p}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != stream {
			t.Fatalf("chunk %d: the body changed (%v)", chunk, err)
		}
		if n := p.m["agentmesh-1"].seen; n != 2 {
			t.Errorf("chunk %d: counted %d progress notifications for agentmesh-1, want 2", chunk, n)
		}
	}
}

// chunked reads s n bytes at a time.
type chunked struct {
	s string
	n int
}

func (c *chunked) Read(b []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	n := min(c.n, len(b), len(c.s))
	copy(b, c.s[:n])
	c.s = c.s[n:]
	return n, nil
}
