package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every test; nothing waits on time otherwise.
const testTimeout = 30 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

type echoIn struct {
	Text string `json:"text"`
}

type echoOut struct {
	Echo string `json:"echo"`
}

// upstream is an MCP SDK server behind a recording handler: the stand-in
// for what a gateway forwards to.
type upstream struct {
	server *mcp.Server

	// handler serves sessions (protocols before 2026-07-28); stateless
	// serves 2026-07-28 and later, which the SDK offers only without
	// sessions.
	handler   atomic.Pointer[http.Handler]
	stateless http.Handler
	// intercept, if set, may answer a request instead of the MCP handler; it
	// gets the body already read.
	intercept atomic.Pointer[func(w http.ResponseWriter, r *http.Request, body []byte) bool]

	mu       sync.Mutex
	requests []recorded
	// streamReady receives a value each time a stream for server-initiated
	// messages is ready: a standalone GET stream set up by the SDK (its
	// first flush), or a subscriptions/listen acknowledged.
	streamReady chan struct{}

	// blockers are released together when n calls of "barrier" are waiting.
	barrier struct {
		sync.Mutex
		waiting int
		release chan struct{}
	}
	barrierN int
}

type recorded struct {
	proto  string
	method string
	header http.Header
	body   []byte
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{streamReady: make(chan struct{}, 16), barrierN: 3}
	u.barrier.release = make(chan struct{})
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echoes text"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			return nil, echoOut{Echo: in.Text}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "progress", Description: "reports progress three times"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			tok := req.Params.GetProgressToken()
			for i := 1; i <= 3; i++ {
				if tok == nil {
					break
				}
				if err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: tok, Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d", i),
				}); err != nil {
					return nil, echoOut{}, err
				}
			}
			return nil, echoOut{Echo: "done"}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "sample", Description: "asks the client's model"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			res, err := req.Session.CreateMessage(ctx, &mcp.CreateMessageParams{
				MaxTokens: 10,
				Messages:  []*mcp.SamplingMessage{{Role: "user", Content: &mcp.TextContent{Text: in.Text}}},
			})
			if err != nil {
				return nil, echoOut{}, err
			}
			text, _ := res.Content.(*mcp.TextContent)
			if text == nil {
				return nil, echoOut{}, errors.New("sampling returned no text")
			}
			return nil, echoOut{Echo: text.Text}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "barrier", Description: "returns when three calls wait together"},
		func(ctx context.Context, req *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, echoOut, error) {
			u.barrier.Lock()
			u.barrier.waiting++
			if u.barrier.waiting == u.barrierN {
				close(u.barrier.release)
			}
			release := u.barrier.release
			u.barrier.Unlock()
			select {
			case <-release:
				return nil, echoOut{Echo: in.Text}, nil
			case <-ctx.Done():
				return nil, echoOut{}, ctx.Err()
			}
		})
	s.AddPrompt(&mcp.Prompt{Name: "greet", Description: "a greeting"},
		func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello"}}}}, nil
		})
	s.AddResource(&mcp.Resource{URI: "test://hello", Name: "hello", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: "hello world"}}}, nil
		})
	u.server = s
	u.stateless = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true})
	u.reset()
	t.Cleanup(u.closeSessions)
	return u
}

// reset replaces the MCP handler, forgetting every session, as a gateway
// restart would.
func (u *upstream) reset() {
	u.closeSessions()
	var h http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.server }, nil)
	u.handler.Store(&h)
}

// closeSessions ends every server session, as a gateway going away does.
func (u *upstream) closeSessions() {
	var all []*mcp.ServerSession
	for ss := range u.server.Sessions() {
		all = append(all, ss)
	}
	for _, ss := range all {
		ss.Close()
	}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var env struct {
		Method string `json:"method"`
	}
	_ = json.Unmarshal(body, &env)
	u.mu.Lock()
	u.requests = append(u.requests, recorded{proto: r.Proto, method: r.Method + " " + env.Method, header: r.Header.Clone(), body: body})
	u.mu.Unlock()
	if f := u.intercept.Load(); f != nil && (*f)(w, r, body) {
		return
	}
	if r.Header.Get(mcpwire.HeaderProtocolVersion) >= mcpwire.VersionStateless {
		if env.Method == "subscriptions/listen" {
			w = &writeSignal{ResponseWriter: w, ch: u.streamReady, marker: []byte("notifications/subscriptions/acknowledged")}
		}
		u.stateless.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodGet {
		w = &flushSignal{ResponseWriter: w, ch: u.streamReady}
	}
	(*u.handler.Load()).ServeHTTP(w, r)
}

// recordedRequests returns what the upstream received, filtered by "HTTPMETHOD jsonrpcmethod".
// requestCount is how many requests reached the gateway.
func (u *upstream) requestCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

func (u *upstream) recordedRequests(what string) []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []recorded
	for _, r := range u.requests {
		if r.method == what {
			out = append(out, r)
		}
	}
	return out
}

// flushSignal reports the first flush of a response.
type flushSignal struct {
	http.ResponseWriter
	ch   chan struct{}
	once sync.Once
}

func (f *flushSignal) Flush() {
	if fl, ok := f.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	f.once.Do(func() { f.ch <- struct{}{} })
}

func (f *flushSignal) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// writeSignal reports the first write of a response that contains marker.
type writeSignal struct {
	http.ResponseWriter
	ch     chan struct{}
	marker []byte
	once   sync.Once
}

func (f *writeSignal) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	if bytes.Contains(p, f.marker) {
		f.once.Do(func() { f.ch <- struct{}{} })
	}
	return n, err
}

func (f *writeSignal) Flush() {
	if fl, ok := f.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

func (f *writeSignal) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// env is one test's world: CA, upstream behind a TLS gateway, a connector.
type env struct {
	ca   *connectortest.CA
	up   *upstream
	gw   *connectortest.Gateway
	conn *connector.Connector
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ca := connectortest.NewCA(t)
	up := newUpstream(t)
	gw := connectortest.StartGateway(t, ca, up)
	var log *slog.Logger
	if _, ok := t.(*testing.T); ok {
		log = testLogger(t)
	}
	c, err := connector.New(connector.Config{
		Resolve: gw.Resolve,
		TLS:     ca.ClientTLS(t, "spiffe://test.mesh/agent/tester"),
		Logger:  log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &env{ca: ca, up: up, gw: gw, conn: c}
}

// clientOptions returns client options whose handlers report on channels.
type clientEvents struct {
	progress    chan string
	toolsChange chan struct{}
}

func newClient(ev *clientEvents) *mcp.Client {
	opts := &mcp.ClientOptions{
		CreateMessageHandler: func(ctx context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			var in string
			if len(req.Params.Messages) > 0 {
				if tc, ok := req.Params.Messages[0].Content.(*mcp.TextContent); ok {
					in = tc.Text
				}
			}
			return &mcp.CreateMessageResult{Model: "test-model", Role: "assistant", Content: &mcp.TextContent{Text: "model says: " + in}}, nil
		},
	}
	if ev != nil {
		opts.ProgressNotificationHandler = func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			select {
			case ev.progress <- req.Params.Message:
			default:
			}
		}
		opts.ToolListChangedHandler = func(ctx context.Context, req *mcp.ToolListChangedRequest) {
			select {
			case ev.toolsChange <- struct{}{}:
			default:
			}
		}
	}
	return mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1.0.0"}, opts)
}

func newEvents() *clientEvents {
	return &clientEvents{progress: make(chan string, 16), toolsChange: make(chan struct{}, 4)}
}

// stdioSession connects an SDK client to c.ServeStdio through pipes. The
// returned wait closes the client and returns ServeStdio's result.
func connectStdio(t testing.TB, ctx context.Context, c *connector.Connector, client *mcp.Client, version string) (*mcp.ClientSession, func() error) {
	t.Helper()
	agentR, agentW := io.Pipe() // agent -> connector
	connR, connW := io.Pipe()   // connector -> agent
	done := make(chan error, 1)
	go func() {
		err := c.ServeStdio(ctx, agentR, connW)
		connW.Close()
		agentR.Close()
		done <- err
	}()
	var opts *mcp.ClientSessionOptions
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := client.Connect(ctx, &mcp.IOTransport{Reader: connR, Writer: agentW}, opts)
	if err != nil {
		agentW.Close()
		connR.Close()
		<-done
		t.Fatalf("connect over stdio: %v", err)
	}
	var once sync.Once
	var result error
	wait := func() error {
		once.Do(func() {
			cs.Close()
			result = <-done
		})
		return result
	}
	t.Cleanup(func() { _ = wait() })
	return cs, wait
}

// testToken is the bearer token of every local endpoint serveListener
// starts; connectHTTP and rawRequest send it.
const testToken = loopback.TokenPrefix + "connector-test-token"

// serveListener runs c.ServeListener on a fresh loopback port, requiring
// testToken, and returns the endpoint URL. The server stops when the test
// ends.
func serveListener(t testing.TB, c *connector.Connector) string {
	t.Helper()
	ln, err := connector.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, c, ln, loopback.Auth{Token: testToken})
	return "http://" + ln.Addr().String() + "/mcp"
}

// serveOn runs c.ServeListener on ln with auth until the test ends.
func serveOn(t testing.TB, c *connector.Connector, ln net.Listener, auth loopback.Auth) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.ServeListener(ctx, ln, auth) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
}

// connectHTTP connects an SDK client over Streamable HTTP to endpoint.
func connectHTTP(t testing.TB, ctx context.Context, endpoint string, client *mcp.Client, version string) *mcp.ClientSession {
	t.Helper()
	tr := &http.Transport{DialContext: (&net.Dialer{}).DialContext, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	var opts *mcp.ClientSessionOptions
	if version != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: loopback.WithToken(tr, testToken)},
		MaxRetries: -1,
	}, opts)
	if err != nil {
		t.Fatalf("connect over HTTP: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func callEcho(ctx context.Context, cs *mcp.ClientSession, text string) (string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if err != nil {
		return "", err
	}
	if res.IsError {
		return "", fmt.Errorf("tool error: %v", res.Content)
	}
	var out echoOut
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	return out.Echo, nil
}

// testLogger logs through t, so the connector's logs show with failures.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
