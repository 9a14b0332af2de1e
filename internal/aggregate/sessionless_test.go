package aggregate

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/loopback"
)

// httpEndpoint is a's HTTP endpoint, served until stop.
type httpEndpoint struct {
	url    string
	tr     *http.Transport
	stop   context.CancelFunc
	served chan error
}

// serveHTTP serves a over HTTP on a loopback port until the test ends
// (or the endpoint's stop, after which served says how ServeListener
// ended).
func serveHTTP(t *testing.T, a *Aggregator) *httpEndpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &httpEndpoint{url: "http://" + ln.Addr().String() + "/mcp", tr: &http.Transport{}, stop: stop, served: make(chan error, 1)}
	go func() { e.served <- a.ServeListener(ctx, ln, loopback.Auth{NoToken: true}) }()
	t.Cleanup(func() {
		// Connections first: one the client dialed for a request it
		// then cancelled is new to the server, which a shutdown waits
		// for (net/http treats it as idle only after 5 s).
		e.tr.CloseIdleConnections()
		stop()
		if err := <-e.served; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
		e.served <- nil // for a later Cleanup's receive
	})
	return e
}

// connect connects an SDK client asking for version over HTTP.
func (e *httpEndpoint) connect(t *testing.T, name, version string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	cl := mcp.NewClient(&mcp.Implementation{Name: name, Version: "1"}, opts)
	cs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: e.url, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: e.tr}}, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for tool, err := range cs.Tools(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tool.Name)
	}
	return names
}

// TestA2026ClientOverHTTPIsServedStatelessly: over the HTTP endpoint, a
// client asking for 2026-07-28 gets it (server/discover, no session),
// lists and calls the tools of two services and learns who it is in the
// mesh; a client of an earlier version on the same endpoint still gets
// its session.
func TestA2026ClientOverHTTPIsServedStatelessly(t *testing.T) {
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"one": upstream("first", "x"), "two": upstream("", "y")})
	a.Update(Snapshot{PolicyVersion: 7, Services: []Service{{Name: "one", Addr: "1"}, {Name: "two", Addr: "2"}}})
	waitTools(t, cs, changed, "one__x", "two__y")
	e := serveHTTP(t, a)

	neu := e.connect(t, "new", protocol2026, nil)
	ir := neu.InitializeResult()
	if ir.ProtocolVersion != protocol2026 {
		t.Fatalf("negotiated %s over HTTP, want %s", ir.ProtocolVersion, protocol2026)
	}
	if id := neu.ID(); id != "" {
		t.Errorf("a 2026-07-28 client got the session %q", id)
	}
	// The SDK's client keeps no _meta of server/discover's result
	// (TestInitializeTellsWhoAndUnderWhichPolicy reads it raw); the
	// instructions show the aggregator answered it.
	if !strings.Contains(ir.Instructions, "## one") {
		t.Errorf("server/discover: instructions %q", ir.Instructions)
	}
	if got := strings.Join(toolNames(t, neu), ","); got != "one__x,two__y" {
		t.Errorf("tools: %s", got)
	}
	for tool, want := range map[string]string{"one__x": "x", "two__y": "y"} {
		if got := callText(t, neu, &mcp.CallToolParams{Name: tool}); got != want {
			t.Errorf("%s answered %q", tool, got)
		}
	}
	a.clients.mu.Lock()
	n := len(a.clients.by)
	a.clients.mu.Unlock()
	if n != 0 {
		t.Errorf("sessionless requests left %d client sessions' state behind", n)
	}

	old := e.connect(t, "old", protocol2025, nil)
	if v := old.InitializeResult().ProtocolVersion; v != protocol2025 {
		t.Fatalf("an older client negotiated %s", v)
	}
	if old.ID() == "" {
		t.Error("an older client got no session")
	}
	if got := callText(t, old, &mcp.CallToolParams{Name: "two__y"}); got != "y" {
		t.Errorf("the older client's call answered %q", got)
	}
	// The 2026-07-28 client still works beside it.
	if got := callText(t, neu, &mcp.CallToolParams{Name: "one__x"}); got != "x" {
		t.Errorf("after the older client: %q", got)
	}
}

// TestStoppingTheEndpointEndsASessionlessCallInFlight: stopping the HTTP
// endpoint while a 2026-07-28 call waits on its service cancels the call
// at the service, and the stop returns.
func TestStoppingTheEndpointEndsASessionlessCallInFlight(t *testing.T) {
	block := make(chan string, 2)
	a, _ := routedFixture(t, routedUpstream(block))
	e := serveHTTP(t, a)
	neu := e.connect(t, "new", protocol2026, nil)
	done := make(chan error, 1)
	go func() {
		_, err := neu.CallTool(context.Background(), &mcp.CallToolParams{Name: "svc__block"})
		done <- err
	}()
	if got := <-block; got != "started" {
		t.Fatalf("block: %s", got)
	}
	e.stop()
	// The stop ends the call's context first (httpserver.Run), which
	// cancels it at the service; had the call ignored it, the stop would
	// have cut it after a grace period and the service would never hear.
	select {
	case <-block:
	case <-time.After(30 * time.Second):
		t.Fatal("the service's handler never saw the call cancelled")
	}
	select {
	case err := <-e.served:
		if err != nil {
			t.Errorf("ServeListener: %v", err)
		}
		e.served <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("the endpoint did not stop")
	}
	if err := <-done; err == nil {
		t.Error("the call in flight succeeded")
	}
}

// TestSessionlessRequestsAreBounded: 2026-07-28 requests without a
// session hold at most MaxSessionlessRequests slots of the endpoint;
// one more is refused with CodeLimited, too_many_requests, while a
// client with a session still gets through.
func TestSessionlessRequestsAreBounded(t *testing.T) {
	block := make(chan string, 2*MaxSessionlessRequests+4)
	a, _ := routedFixture(t, routedUpstream(block))
	e := serveHTTP(t, a)
	neu := e.connect(t, "new", protocol2026, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for range MaxSessionlessRequests {
		wg.Go(func() { neu.CallTool(ctx, &mcp.CallToolParams{Name: "svc__block"}) })
	}
	for range MaxSessionlessRequests {
		if got := <-block; got != "started" {
			t.Fatalf("block: %s", got)
		}
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	_, err := neu.CallTool(cctx, &mcp.CallToolParams{Name: "svc__block"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != CodeLimited || !strings.Contains(string(je.Data), "too_many_requests") {
		t.Fatalf("a sessionless call past the bound: %v, want CodeLimited too_many_requests", err)
	}
	old := e.connect(t, "old", protocol2025, nil)
	if got := callText(t, old, &mcp.CallToolParams{Name: "svc__progress"}); got != "no token" {
		t.Errorf("a client with a session: %q", got)
	}
}

// TestA2026RequestGetsItsServiceLogMessagesAtItsLevel: a 2026-07-28
// request that asks for log messages (io.modelcontextprotocol/logLevel
// in its _meta) gets those its service sent while handling it, at that
// level and named by the service, on its own response, over HTTP as
// over stdio, and two clients at once get each their own; a request
// without a level gets none.
func TestA2026RequestGetsItsServiceLogMessagesAtItsLevel(t *testing.T) {
	up := routedUpstream(make(chan string, 2))
	a, _ := routedFixture(t, up)
	e := serveHTTP(t, a)
	type logClient struct {
		cs   *mcp.ClientSession
		logs chan *mcp.LoggingMessageParams
	}
	connect := func(name string, over string) logClient {
		c := logClient{logs: make(chan *mcp.LoggingMessageParams, 16)}
		opts := &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) { c.logs <- req.Params }}
		if over == "http" {
			c.cs = e.connect(t, name, protocol2026, opts)
			return c
		}
		ct, st := mcp.NewInMemoryTransports()
		ss, err := a.Server().Connect(context.Background(), st, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.cs, err = mcp.NewClient(&mcp.Implementation{Name: name, Version: "1"}, opts).Connect(context.Background(), ct, &mcp.ClientSessionOptions{ProtocolVersion: protocol2026})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.cs.Close(); ss.Close() })
		return c
	}
	// got returns the levels of the next n log messages c gets (the
	// client hands them to its handler apart from the calls' results),
	// checking their logger.
	got := func(c logClient, n int) string {
		t.Helper()
		var levels []string
		for range n {
			select {
			case m := <-c.logs:
				if m.Logger != "svc/up" || m.Data != string(m.Level) {
					t.Errorf("log message %+v, want one from svc/up", m)
				}
				levels = append(levels, string(m.Level))
			case <-time.After(30 * time.Second):
				t.Fatalf("got log messages %v, want %d", levels, n)
			}
		}
		slices.Sort(levels)
		return strings.Join(levels, ",")
	}
	call := func(c logClient, level string) {
		p := &mcp.CallToolParams{Name: "svc__log"}
		if level != "" {
			p.Meta = mcp.Meta{mcp.MetaKeyLogLevel: level}
		}
		if text := callText(t, c.cs, p); text != "logged" {
			t.Fatalf("log: %q", text)
		}
	}
	for _, over := range []string{"http", "stdio"} {
		t.Run(over, func(t *testing.T) {
			alice, bob := connect("alice", over), connect("bob", over)
			if v := alice.cs.InitializeResult().ProtocolVersion; v != protocol2026 {
				t.Fatalf("negotiated %s", v)
			}
			// The client handles its messages in the order they came, the
			// first call's before the second's: the first got none.
			call(alice, "")
			call(alice, "info")
			if l := got(alice, 1); l != "info" {
				t.Errorf("a request without a level, then one at info, got %q", l)
			}
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() { call(alice, "info") })
				wg.Go(func() { call(bob, "debug") })
			}
			wg.Wait()
			if l := got(alice, 3); l != "info,info,info" {
				t.Errorf("alice at info got %q", l)
			}
			if l := got(bob, 6); l != "debug,debug,debug,info,info,info" {
				t.Errorf("bob at debug got %q", l)
			}
			// Nothing more: the next messages are those of the next call.
			call(alice, "info")
			call(bob, "info")
			if l := got(alice, 1) + " " + got(bob, 1); l != "info info" {
				t.Errorf("after the concurrent calls: %q", l)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for upstreamSessions(up) > 1 { // the backend's own
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions at the service after the requests", upstreamSessions(up))
		}
		runtime.Gosched()
	}
}

// TestSessionlessListensAreBoundedApart: 2026-07-28 clients' open
// subscriptions/listen streams hold at most MaxSessionlessListens slots
// of their own: one more is refused (under its JSON-RPC id), while
// calls still get through.
func TestSessionlessListensAreBoundedApart(t *testing.T) {
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"svc": upstream("", "x")})
	a.Update(Snapshot{Services: []Service{{Name: "svc", Addr: "1"}}})
	waitTools(t, cs, changed, "svc__x")
	e := serveHTTP(t, a)
	// A 2026-07-28 client of the SDK with a list_changed handler keeps
	// a listen open for it; each is a server session of its own while
	// it lasts (beside the fixture's client's).
	var clients []*mcp.ClientSession
	for range MaxSessionlessListens {
		clients = append(clients, e.connect(t, "c", protocol2026, &mcp.ClientOptions{ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {}}))
	}
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; n != 1+MaxSessionlessListens; {
		n = 0
		for range a.Server().Sessions() {
			n++
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d server sessions, want %d listens and the fixture's", n, MaxSessionlessListens)
		}
		runtime.Gosched()
	}
	resp := postListen(t, context.Background(), e, `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{}}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"id":7`) || !strings.Contains(string(body), `"code":-32042`) || !strings.Contains(string(body), "too_many_requests") {
		t.Errorf("a listen past the bound: %d %s", resp.StatusCode, body)
	}
	if got := callText(t, clients[0], &mcp.CallToolParams{Name: "svc__x"}); got != "x" {
		t.Errorf("a call beside the listens: %q", got)
	}
}
