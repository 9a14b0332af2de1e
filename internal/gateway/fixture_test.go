package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
)

// stdioServerEnv makes the test binary an MCP stdio server (for the
// CommandUpstream tests).
const stdioServerEnv = "GATEWAYTEST_STDIO_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(stdioServerEnv) == "1" {
		srv := gatewaytest.NewServer(gatewaytest.NewCalls())
		if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const testTimeout = 30 * time.Second

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// basePolicy grants agent:fraud most tools (query only without DELETE),
// public resources and the greet prompt; agent:other only echo.
const basePolicy = `{
  // test policy
  "grants": [
    {
      "src": ["agent:fraud"],
      "dst": ["tool:payments-db"],
      "tools": ["echo", "query", "progress", "sample", "big"],
      "resources": ["db://public/*"],
      "prompts": ["greet"],
      "when": "tool.name != 'query' || !args.sql.matches(r'(?i)\\bdelete\\b')",
    },
    { "src": ["agent:other"], "dst": ["tool:payments-db"], "tools": ["echo"] },
  ],
}`

// noEchoPolicy is basePolicy without echo for agent:fraud.
const noEchoPolicy = `{
  "grants": [
    { "src": ["agent:fraud"], "dst": ["tool:payments-db"],
      "tools": ["query", "progress", "sample", "big"], "resources": ["db://public/*"], "prompts": ["greet"] },
    { "src": ["agent:other"], "dst": ["tool:payments-db"], "tools": ["echo"] },
  ],
}`

// testLogger discards, unless GATEWAY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("GATEWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type fixture struct {
	t        testing.TB
	mesh     *gatewaytest.Mesh
	rec      *gatewaytest.Recorder
	up       *gatewaytest.Upstream
	gw       *Gateway
	url      string
	gwID     identity.ID
	self     policy.Node
	fraud    *tls.Certificate
	other    *tls.Certificate
	outsider *tls.Certificate
	peers    map[identity.Name]admission.Peer
	version  int
}

type fixtureOpts struct {
	stdio bool
	// inProcess calls gatewaytest's MCP server in-process
	// (HandlerUpstream) instead of over HTTP; f.up still records it.
	inProcess bool
	// upstreamIdle makes the HTTP upstream close idle connections.
	upstreamIdle time.Duration
	// now is the gateway's clock; nil is time.Now.
	now func() time.Time
	// aggregate sets Config.Refusals to an aggregator into the recorder.
	aggregate bool
	// config, if set, adjusts the gateway's Config before New.
	config func(*Config)
	// upstream, if set, serves as the HTTP upstream (at /mcp) instead of
	// gatewaytest's MCP server; f.up is then nil.
	upstream http.Handler
	// log, if set, receives the gateway's log (its http.Server's too) at
	// debug level.
	log io.Writer
}

func compile(t testing.TB, doc, version string) *policy.Policy {
	t.Helper()
	p, err := policy.Compile([]byte(doc), version)
	if err != nil {
		t.Fatalf("compile policy: %v", err)
	}
	return p
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{t: t, mesh: gatewaytest.NewMesh(t), rec: gatewaytest.NewRecorder()}
	f.gwID = gatewaytest.ID(t, identity.KindTool, "payments-db")
	f.self = policy.Node{Name: f.gwID.Name, Kind: f.gwID.Kind}
	fraudID := gatewaytest.ID(t, identity.KindAgent, "fraud")
	otherID := gatewaytest.ID(t, identity.KindAgent, "other")
	f.fraud = f.mesh.Issue(t, fraudID, "inc1")
	f.other = f.mesh.Issue(t, otherID, "inc1")
	f.outsider = f.mesh.Issue(t, gatewaytest.ID(t, identity.KindAgent, "outsider"), "inc1")
	f.peers = map[identity.Name]admission.Peer{
		fraudID.Name: {Node: policy.Node{Name: fraudID.Name, Kind: fraudID.Kind}, ID: fraudID, Incarnation: "inc1"},
		otherID.Name: {Node: policy.Node{Name: otherID.Name, Kind: otherID.Kind}, ID: otherID, Incarnation: "inc1"},
	}
	var up Upstream
	if o.stdio {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		up = CommandUpstream{Argv: []string{exe}, Env: append(os.Environ(), stdioServerEnv+"=1")}
	} else if o.upstream != nil {
		srv := httptest.NewServer(o.upstream)
		t.Cleanup(srv.Close)
		up = HTTPUpstream{URL: srv.URL + "/mcp"}
	} else {
		f.up = gatewaytest.NewUpstreamIdle(t, o.upstreamIdle)
		up = HTTPUpstream{URL: f.up.URL}
		if o.inProcess {
			up = HandlerUpstream{Handler: f.up.Handler}
		}
	}
	logger := testLogger()
	if o.log != nil {
		logger = slog.New(slog.NewTextHandler(o.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := Config{
		TLS:            f.mesh.ServerTLS(f.mesh.Issue(t, f.gwID, "gw1")),
		Upstream:       up,
		Audit:          f.rec,
		Logger:         logger,
		RecordArgsHash: true,
		Now:            o.now,
		Refusals:       refusalsFor(f.rec, o.aggregate),
	}
	if o.config != nil {
		o.config(&cfg)
	}
	gw, err := New(cfg, f.state(basePolicy))
	if err != nil {
		t.Fatal(err)
	}
	f.gw = gw
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.url = "https://" + ln.Addr().String() + "/mcp"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// state builds a State with doc as policy and the fixture's peers, with
// changes applied.
func (f *fixture) state(doc string, changes ...func(map[identity.Name]admission.Peer)) *admission.State {
	f.version++
	peers := make(map[identity.Name]admission.Peer, len(f.peers))
	for k, v := range f.peers {
		peers[k] = v
	}
	for _, c := range changes {
		c(peers)
	}
	return &admission.State{
		Policy: compile(f.t, doc, "v"+strings.Repeat("1", f.version)),
		Self:   f.self, SelfID: f.gwID, Peers: peers,
	}
}

func (f *fixture) httpClient(cert *tls.Certificate) *http.Client {
	c := f.mesh.Client(cert, f.gwID)
	f.t.Cleanup(c.CloseIdleConnections)
	return c
}

// connect opens an SDK client session through the gateway.
func (f *fixture) connect(ctx context.Context, cert *tls.Certificate, version string, opts *mcp.ClientOptions) *mcp.ClientSession {
	f.t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, opts)
	tr := &mcp.StreamableClientTransport{Endpoint: f.url, HTTPClient: f.httpClient(cert), MaxRetries: -1}
	var so *mcp.ClientSessionOptions
	if version != "" {
		so = &mcp.ClientSessionOptions{ProtocolVersion: version}
	}
	cs, err := client.Connect(ctx, tr, so)
	if err != nil {
		f.t.Fatalf("connect: %v", err)
	}
	f.t.Cleanup(func() { cs.Close() })
	return cs
}

// denial is the data of a gateway JSON-RPC error.
type denial struct {
	Code    int
	Reason  reason.Code `json:"reason"`
	EventID string      `json:"event_id"`
}

// denialOf extracts the gateway's error from an SDK call error.
func denialOf(t testing.TB, err error) denial {
	t.Helper()
	var we *jsonrpc.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T) is not a JSON-RPC error", err, err)
	}
	var d denial
	if err := json.Unmarshal(we.Data, &d); err != nil {
		t.Fatalf("error data %s: %v", we.Data, err)
	}
	d.Code = int(we.Code)
	return d
}

// rawPost sends body to the gateway as cert, with headers, and returns the
// status and body.
func (f *fixture) rawPost(ctx context.Context, c *http.Client, body string, hdr map[string]string) (int, http.Header, []byte) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("read: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

// rawSession initializes a session over raw HTTP and returns its id.
func (f *fixture) rawSession(ctx context.Context, c *http.Client, version string) string {
	f.t.Helper()
	status, h, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"`+version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	if status != http.StatusOK {
		f.t.Fatalf("initialize: %d %s", status, b)
	}
	sid := h.Get("Mcp-Session-Id")
	if sid == "" {
		f.t.Fatalf("initialize: no session id")
	}
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": version}
	if status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, hdr); status != http.StatusAccepted {
		f.t.Fatalf("initialized: %d %s", status, b)
	}
	return sid
}

// rpcError finds the JSON-RPC error in a JSON or SSE response body.
func rpcError(t testing.TB, b []byte) denial {
	t.Helper()
	s := string(b)
	if !strings.HasPrefix(strings.TrimSpace(s), "{") {
		// An SSE body: the first event with data.
		r := sse.NewReader(strings.NewReader(s), len(s))
		for {
			ev, err := r.Next()
			if err != nil {
				t.Fatalf("no event with data in %q (%v)", b, err)
			}
			if ev.HasData {
				s = string(ev.Data)
				break
			}
		}
	}
	var msg struct {
		Error *struct {
			Code int             `json:"code"`
			Data json.RawMessage `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(s), &msg); err != nil || msg.Error == nil {
		t.Fatalf("no JSON-RPC error in %q (%v)", b, err)
	}
	var d denial
	_ = json.Unmarshal(msg.Error.Data, &d)
	d.Code = msg.Error.Code
	return d
}

// httpKinds are the two upstream kinds that share the HTTP code path: a
// server over HTTP and the same server called in-process. Tests of what
// the gateway decides run against both, so that a server embedding the
// gateway (package mesh) is held to exactly the gateway's behaviour.
var httpKinds = []struct {
	name string
	opts fixtureOpts
}{
	{"http", fixtureOpts{}},
	{"in-process", fixtureOpts{inProcess: true}},
}

// forHTTPKinds runs test once per httpKinds entry, with its options.
func forHTTPKinds(t *testing.T, test func(t *testing.T, o fixtureOpts)) {
	for _, k := range httpKinds {
		t.Run(k.name, func(t *testing.T) { test(t, k.opts) })
	}
}
