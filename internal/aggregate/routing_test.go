package aggregate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/loopback"
)

const protocol2025 = "2025-11-25"

// routedFixture aggregates up (a routedUpstream) as the one service
// "svc" and waits until the fixture's client lists its tools.
func routedFixture(t *testing.T, up *mcp.Server) (*Aggregator, *mcp.ClientSession) {
	t.Helper()
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"svc": up})
	a.Update(Snapshot{Services: []Service{{Name: "svc", Addr: "1"}}})
	waitTools(t, cs, changed, "svc__block", "svc__elicit", "svc__log", "svc__progress", "svc__roots", "svc__sample")
	return a, cs
}

// routedUpstream is an MCP server whose tools need what flows besides a
// call and its result:
//
//   - sample, elicit and roots ask the caller's client (by a request on a
//     session before 2026-07-28, in an input_required result from then
//     on) and answer how they asked and what it said;
//   - progress sends three progress notifications with the call's token;
//   - log logs at info and debug under the logger "up";
//   - block sends "started" on block, waits until the call is
//     cancelled and sends "cancelled".
func routedUpstream(block chan<- string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "routed", Version: "1"}, nil)
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	add := func(name string, h mcp.ToolHandler) {
		s.AddTool(&mcp.Tool{Name: name, InputSchema: map[string]any{"type": "object"}}, h)
	}
	legacy := func(req *mcp.CallToolRequest) bool {
		ip := req.Session.InitializeParams()
		return ip != nil && ip.ProtocolVersion < protocol2026
	}
	// ask returns the answer to in, asked by a request or in an
	// input_required result.
	ask := func(ctx context.Context, req *mcp.CallToolRequest, in mcp.InputRequest) (mcp.InputResponse, *mcp.CallToolResult, error) {
		if legacy(req) {
			switch p := in.(type) {
			case *mcp.CreateMessageParams:
				r, err := req.Session.CreateMessage(ctx, p)
				return &mcp.CreateMessageWithToolsResult{Content: []mcp.Content{r.Content}}, nil, err
			case *mcp.ElicitParams:
				r, err := req.Session.Elicit(ctx, p)
				return r, nil, err
			case *mcp.ListRootsParams:
				r, err := req.Session.ListRoots(ctx, p)
				return r, nil, err
			}
		}
		if r, ok := req.Params.InputResponses["q"]; ok {
			return r, nil, nil
		}
		return nil, &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"q": in}, RequestState: "asked"}, nil
	}
	answer := func(in func() mcp.InputRequest, say func(mcp.InputResponse) string) mcp.ToolHandler {
		return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			how := "input_required: "
			if legacy(req) {
				how = "request: "
			}
			r, pending, err := ask(ctx, req, in())
			if err != nil || pending != nil {
				return pending, err
			}
			return text(how + say(r)), nil
		}
	}
	add("sample", answer(func() mcp.InputRequest {
		return &mcp.CreateMessageParams{MaxTokens: 5, Messages: []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: "who?"}}}}
	}, func(r mcp.InputResponse) string {
		return r.(*mcp.CreateMessageWithToolsResult).Content[0].(*mcp.TextContent).Text
	}))
	add("elicit", answer(func() mcp.InputRequest {
		return &mcp.ElicitParams{Message: "name?", RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}}
	}, func(r mcp.InputResponse) string {
		return fmt.Sprint(r.(*mcp.ElicitResult).Content["name"])
	}))
	add("roots", answer(func() mcp.InputRequest { return &mcp.ListRootsParams{} }, func(r mcp.InputResponse) string {
		var uris []string
		for _, root := range r.(*mcp.ListRootsResult).Roots {
			uris = append(uris, root.URI)
		}
		return strings.Join(uris, ",")
	}))
	add("progress", func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		tok := req.Params.GetProgressToken()
		if tok == nil {
			return text("no token"), nil
		}
		for i := range 3 {
			if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i + 1), Total: 3}); err != nil {
				return nil, err
			}
		}
		return text("done"), nil
	})
	add("log", func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		for _, l := range []mcp.LoggingLevel{"debug", "info"} {
			if err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: l, Logger: "up", Data: string(l)}); err != nil {
				return nil, err
			}
		}
		return text("logged"), nil
	})
	add("block", func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		block <- "started"
		<-ctx.Done()
		block <- "cancelled"
		return nil, ctx.Err()
	})
	return s
}

// routedClient is an aggregated client of protocol version, answering
// sampling, elicitation and roots/list with its name, and recording the
// progress and log messages it gets.
type routedClient struct {
	client   *mcp.Client
	cs       *mcp.ClientSession
	progress chan *mcp.ProgressNotificationParams
	logs     chan *mcp.LoggingMessageParams
}

func connectRouted(t *testing.T, a *Aggregator, name, version string) *routedClient {
	t.Helper()
	rc := &routedClient{progress: make(chan *mcp.ProgressNotificationParams, 16), logs: make(chan *mcp.LoggingMessageParams, 16)}
	cl := mcp.NewClient(&mcp.Implementation{Name: name, Version: "1"}, &mcp.ClientOptions{
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Role: "assistant", Model: "m", Content: &mcp.TextContent{Text: "model of " + name}}, nil
		},
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": name}}, nil
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			rc.progress <- req.Params
		},
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) { rc.logs <- req.Params },
	})
	cl.AddRoots(&mcp.Root{URI: "file:///" + name})
	rc.client = cl
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := a.Server().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc.cs, err = cl.Connect(ctx, ct, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.cs.Close(); ss.Close() })
	return rc
}

func callText(t *testing.T, cs *mcp.ClientSession, p *mcp.CallToolParams) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, p)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	if res.IsError || len(res.Content) != 1 {
		t.Fatalf("%s: %+v", p.Name, res)
	}
	return res.Content[0].(*mcp.TextContent).Text
}

// TestServerToClientRequestsReachTheClientWhoseCallCausedThem: two
// clients call the same service's tools that sample, elicit and list
// roots; each gets its own client's answer: by a request on the
// client's own session to the service (before 2026-07-28), or in an
// input_required result the client answers and the aggregator passes on
// (2026-07-28).
func TestServerToClientRequestsReachTheClientWhoseCallCausedThem(t *testing.T) {
	for _, version := range []string{protocol2025, protocol2026} {
		t.Run(version, func(t *testing.T) {
			a, _ := routedFixture(t, routedUpstream(make(chan string, 2)))
			alice, bob := connectRouted(t, a, "alice", version), connectRouted(t, a, "bob", version)
			// Before 2026-07-28 the service asks on the client's own
			// session; from then on in the result of the shared one.
			how := "request: "
			if version >= protocol2026 {
				how = "input_required: "
			}
			var wg sync.WaitGroup
			for _, c := range []struct {
				rc   *routedClient
				name string
			}{{alice, "alice"}, {bob, "bob"}} {
				for tool, want := range map[string]string{"sample": "model of " + c.name, "elicit": c.name, "roots": "file:///" + c.name} {
					wg.Go(func() {
						if got := callText(t, c.rc.cs, &mcp.CallToolParams{Name: "svc__" + tool}); got != how+want {
							t.Errorf("%s: %s answered %q, want %q", c.name, tool, got, how+want)
						}
					})
				}
			}
			wg.Wait()
		})
	}
}

// TestProgressReachesTheCallerUnderItsToken: a call with a progress
// token gets the service's progress under that token, even when another
// client uses the same token at the same time.
func TestProgressReachesTheCallerUnderItsToken(t *testing.T) {
	for _, version := range []string{protocol2025, protocol2026} {
		t.Run(version, func(t *testing.T) {
			a, _ := routedFixture(t, routedUpstream(make(chan string, 2)))
			clients := []*routedClient{connectRouted(t, a, "alice", version), connectRouted(t, a, "bob", version)}
			var wg sync.WaitGroup
			for _, rc := range clients {
				wg.Go(func() {
					if got := callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__progress", Meta: mcp.Meta{"progressToken": "tok"}}); got != "done" {
						t.Errorf("progress answered %q", got)
					}
				})
			}
			wg.Wait()
			for i, rc := range clients {
				for n := range 3 {
					select {
					case p := <-rc.progress:
						if p.ProgressToken != "tok" || p.Total != 3 {
							t.Errorf("client %d: progress %+v, want token tok of 3", i, p)
						}
					case <-time.After(30 * time.Second):
						t.Fatalf("client %d: got %d progress notifications, want 3", i, n)
					}
				}
				select {
				case p := <-rc.progress:
					t.Errorf("client %d: a fourth progress notification %+v (another's?)", i, p)
				default:
				}
			}
		})
	}
}

// TestCancellingACallCancelsItAtTheService: the client's
// notifications/cancelled (the SDK sends it when the call's context
// ends) reaches the service, whose handler sees its context end.
func TestCancellingACallCancelsItAtTheService(t *testing.T) {
	for _, version := range []string{protocol2025, protocol2026} {
		t.Run(version, func(t *testing.T) {
			block := make(chan string, 2)
			a, _ := routedFixture(t, routedUpstream(block))
			rc := connectRouted(t, a, "alice", version)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := rc.cs.CallTool(ctx, &mcp.CallToolParams{Name: "svc__block"})
				done <- err
			}()
			if got := <-block; got != "started" { // at the service
				t.Fatalf("block: %s", got)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("call: %v, want context.Canceled", err)
			}
			select {
			case <-block:
			case <-time.After(30 * time.Second):
				t.Fatal("the service's handler never saw the call cancelled")
			}
		})
	}
}

// TestServiceLogMessagesReachTheClientAtItsLevel: a client's
// logging/setLevel applies to its sessions to services, opened before
// or after it; their messages reach it with the logger named by the
// service.
func TestServiceLogMessagesReachTheClientAtItsLevel(t *testing.T) {
	a, cs := routedFixture(t, routedUpstream(make(chan string, 2)))
	if cs.InitializeResult().Capabilities.Logging == nil {
		t.Error("the aggregated server does not offer logging")
	}
	rc := connectRouted(t, a, "alice", protocol2025)
	ctx := context.Background()
	want := func(levels ...string) {
		t.Helper()
		for _, l := range levels {
			select {
			case m := <-rc.logs:
				if string(m.Level) != l || m.Logger != "svc/up" || m.Data != l {
					t.Errorf("log message %+v, want %s from svc/up", m, l)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no %s log message", l)
			}
		}
		select {
		case m := <-rc.logs:
			t.Errorf("unexpected log message %+v", m)
		default:
		}
	}
	// Set before the session to the service opens: applied when it does.
	if err := rc.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__log"})
	want("info")
	// Set while it is open: applied to it.
	if err := rc.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}
	callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__log"})
	want("debug", "info")
}

// upstreamSessions counts srv's sessions.
func upstreamSessions(srv *mcp.Server) int {
	n := 0
	for range srv.Sessions() {
		n++
	}
	return n
}

// TestAClientsOwnSessionsCloseWithIt: a client before 2026-07-28 gets a
// session of its own to each service it uses, opened on its first
// request, reused, and closed when the client session ends.
func TestAClientsOwnSessionsCloseWithIt(t *testing.T) {
	up := routedUpstream(make(chan string, 2))
	a, _ := routedFixture(t, up)
	if n := upstreamSessions(up); n != 1 {
		t.Fatalf("%d sessions at the service before any call, want the shared one", n)
	}
	rc := connectRouted(t, a, "alice", protocol2025)
	for range 3 {
		callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__progress"})
	}
	if n := upstreamSessions(up); n != 2 {
		t.Fatalf("%d sessions at the service after three calls, want the shared one and alice's", n)
	}
	rc.cs.Close()
	deadline := time.Now().Add(30 * time.Second)
	for upstreamSessions(up) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("alice's session to the service outlived her session: %d sessions", upstreamSessions(up))
		}
		runtime.Gosched()
	}
}

// TestAClientCannotHoldMoreThanItsRequestsInFlight: past
// MaxInFlightPerClient calls waiting at services, a client's next call
// is refused with CodeLimited, too_many_requests; others are not.
func TestAClientCannotHoldMoreThanItsRequestsInFlight(t *testing.T) {
	// A 2026-07-28 client session (over stdio) has no sessions of its
	// own to services, and is bounded all the same.
	for _, version := range []string{protocol2025, protocol2026} {
		t.Run(version, func(t *testing.T) { testInFlightBound(t, version) })
	}
}

func testInFlightBound(t *testing.T, version string) {
	release := make(chan struct{})
	started := make(chan struct{}, MaxInFlightPerClient+1)
	up := mcp.NewServer(&mcp.Implementation{Name: "slow", Version: "1"}, nil)
	up.AddTool(&mcp.Tool{Name: "wait", InputSchema: map[string]any{"type": "object"}}, func(ctx context.Context, _ *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil
	})
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"svc": up})
	a.Update(Snapshot{Services: []Service{{Name: "svc", Addr: "1"}}})
	waitTools(t, cs, changed, "svc__wait")
	rc := connectRouted(t, a, "alice", version)
	var wg sync.WaitGroup
	defer wg.Wait()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	for range MaxInFlightPerClient {
		wg.Go(func() {
			if _, err := rc.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "svc__wait"}); err != nil {
				t.Errorf("a call within the limit: %v", err)
			}
		})
	}
	for range MaxInFlightPerClient {
		<-started
	}
	_, err := rc.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "svc__wait"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != CodeLimited || !strings.Contains(string(je.Data), "too_many_requests") {
		t.Fatalf("a call past the limit: %v, want CodeLimited too_many_requests", err)
	}
	// Another client's call still reaches the service.
	bob := connectRouted(t, a, "bob", version)
	wg.Go(func() {
		if got := callText(t, bob.cs, &mcp.CallToolParams{Name: "svc__wait"}); got != "ok" {
			t.Errorf("bob's call: %q", got)
		}
	})
	<-started
	close(release)
	released = true
}

// TestCancellingAnHTTPCallCancelsItAtTheService: over Streamable HTTP,
// a client that cancels its call cancels it at the service: a client
// before 2026-07-28 by notifications/cancelled on its session, a
// 2026-07-28 one, served statelessly (sessionless.go), by dropping its
// request.
func TestCancellingAnHTTPCallCancelsItAtTheService(t *testing.T) {
	for _, version := range []string{protocol2025, protocol2026} {
		t.Run(version, func(t *testing.T) {
			block := make(chan string, 2)
			a, _ := routedFixture(t, routedUpstream(block))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- a.ServeListener(sctx, ln, loopback.Auth{NoToken: true}) }()
			defer func() {
				stop()
				if err := <-served; err != nil {
					t.Errorf("ServeListener: %v", err)
				}
			}()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			cl := mcp.NewClient(&mcp.Implementation{Name: "http", Version: "1"}, nil)
			hcs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: "http://" + ln.Addr().String() + "/mcp",
				MaxRetries: -1, HTTPClient: &http.Client{Transport: tr}}, &mcp.ClientSessionOptions{ProtocolVersion: version})
			if err != nil {
				t.Fatal(err)
			}
			defer hcs.Close()
			if got := hcs.InitializeResult().ProtocolVersion; got != version {
				t.Errorf("negotiated %s over HTTP, want %s", got, version)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := hcs.CallTool(ctx, &mcp.CallToolParams{Name: "svc__block"})
				done <- err
			}()
			if got := <-block; got != "started" {
				t.Fatalf("block: %s", got)
			}
			cancel()
			if err := <-done; err == nil {
				t.Error("a cancelled call succeeded")
			}
			select {
			case <-block:
			case <-time.After(30 * time.Second):
				t.Fatal("the service's handler never saw the call cancelled")
			}
		})
	}
}

// TestRootsChangesReachTheServicesAClientUses: a client's
// roots/list_changed goes on to the services it has sessions to, whose
// roots/list then gets its new roots.
func TestRootsChangesReachTheServicesAClientUses(t *testing.T) {
	up := routedUpstream(make(chan string, 2))
	rootsChanged := make(chan struct{}, 4)
	up.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "notifications/roots/list_changed" {
				rootsChanged <- struct{}{}
			}
			return next(ctx, method, req)
		}
	})
	a, _ := routedFixture(t, up)
	rc := connectRouted(t, a, "alice", protocol2025)
	if got := callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__roots"}); got != "request: file:///alice" {
		t.Fatalf("roots: %q", got)
	}
	for i, uri := range []string{"file:///more", "file:///again"} {
		rc.client.AddRoots(&mcp.Root{URI: uri})
		select {
		case <-rootsChanged:
		case <-time.After(30 * time.Second):
			t.Fatalf("change %d: the service got no roots/list_changed", i+1)
		}
	}
	if got := callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__roots"}); got != "request: file:///again,file:///alice,file:///more" {
		t.Fatalf("roots after the changes: %q", got)
	}
}

// TestCloseDoesNotWaitForClientSessions: Close ends the client's own
// sessions to services while the client's session to the aggregator is
// still open (over HTTP it may never end on its own).
func TestCloseDoesNotWaitForClientSessions(t *testing.T) {
	up := routedUpstream(make(chan string, 2))
	a, _ := routedFixture(t, up)
	rc := connectRouted(t, a, "alice", protocol2025)
	callText(t, rc.cs, &mcp.CallToolParams{Name: "svc__progress"})
	closed := make(chan struct{})
	go func() {
		a.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close waits for a client session that is still open")
	}
	deadline := time.Now().Add(30 * time.Second)
	for upstreamSessions(up) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions at the service after Close", upstreamSessions(up))
		}
		runtime.Gosched()
	}
}

// TestAClientCannotOpenSessionsToMoreThanItsShareOfServices: past
// MaxSessionsPerClient services used, a client's call to one more is
// refused with CodeLimited, too_many_sessions.
func TestAClientCannotOpenSessionsToMoreThanItsShareOfServices(t *testing.T) {
	up := map[string]*mcp.Server{}
	var svcs []Service
	var names []string
	for i := range MaxSessionsPerClient + 1 {
		name := fmt.Sprintf("s%02d", i)
		up[name] = upstream("", "x")
		svcs = append(svcs, Service{Name: name, Addr: name})
		names = append(names, name+Separator+"x")
	}
	a, cs, changed := newFixture(t, up)
	a.Update(Snapshot{Services: svcs})
	waitTools(t, cs, changed, names...)
	rc := connectRouted(t, a, "alice", protocol2025)
	for _, name := range names[:MaxSessionsPerClient] {
		if got := callText(t, rc.cs, &mcp.CallToolParams{Name: name}); got != "x" {
			t.Fatalf("%s: %q", name, got)
		}
	}
	_, err := rc.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: names[MaxSessionsPerClient]})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != CodeLimited || !strings.Contains(string(je.Data), "too_many_sessions") {
		t.Fatalf("a call to one service too many: %v, want CodeLimited too_many_sessions", err)
	}
}
