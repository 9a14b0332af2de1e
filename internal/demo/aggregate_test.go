package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/aggregate"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/loopback"
)

// aggregatePolicy lets the agent bot use part of each of two services:
// the ledger's read tools (but not bob's balance: the gateway's when
// denies it) and the notes' read tool. withWrite adds notes' write.
func aggregatePolicy(withWrite bool) string {
	notes := `"read"`
	if withWrite {
		notes += `, "write"`
	}
	return `{"grants": [
  {"src": ["agent:bot"], "dst": ["tool:ledger"], "tools": ["balance", "history"],
   "when": "tool.name != 'balance' || args.account != 'bob'"},
  {"src": ["agent:bot"], "dst": ["tool:notes"], "tools": [` + notes + `]},
]}`
}

// startNotes serves a small MCP server with the tools read, write and
// secret over Streamable HTTP on loopback and returns its URL.
func startNotes(t *testing.T) string {
	t.Helper()
	srv := mcp.NewServer(&mcp.Implementation{Name: "notes", Version: "1"}, &mcp.ServerOptions{Instructions: "Notes are short."})
	type in struct {
		Text string `json:"text,omitempty"`
	}
	for _, name := range []string{"read", "write", "secret"} {
		mcp.AddTool(srv, &mcp.Tool{Name: name, Description: "notes " + name}, func(ctx context.Context, req *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + " ok"}}}, nil, nil
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		httpserver.Run(ctx, hs, ln)
	}()
	t.Cleanup(func() { stop(); <-done })
	return "http://" + ln.Addr().String() + "/mcp"
}

// startNamedGateway serves the tool node name in front of upstream and
// returns a function that stops it and waits for it.
func startNamedGateway(t *testing.T, ctx context.Context, m *Mesh, name, upstream string) (stop func()) {
	t.Helper()
	ready := make(chan struct{}, 1)
	errc := make(chan error, 1)
	gctx, cancel := context.WithCancel(ctx)
	go func() {
		errc <- engine.ServeGateway(gctx, engine.GatewayConfig{State: filepath.Join(m.Dir, name), Listen: "127.0.0.1:0",
			UpstreamURL: upstream, Logger: m.log(), Ready: func(engine.Serving) { ready <- struct{}{} }})
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-errc
		}
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("gateway %s: %v", name, err)
	}
	return stop
}

// TestAggregatedEndpointMergesRoutesAndFollowsChanges: one endpoint for
// the agent bot in front of two gateways lists exactly the tools the
// policy lets it use, namespaced by service; calls reach both; a denial
// is the gateway's; a policy change adding a tool and a gateway that
// stops each reach the client as tools/list_changed, and the other
// service keeps working.
func TestAggregatedEndpointMergesRoutesAndFollowsChanges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	m := &Mesh{Dir: t.TempDir()}
	t.Cleanup(func() {
		cancel()
		m.Close()
	})
	if err := m.StartCoordinator(ctx, engineCoordinatorConfig()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ name, kind string }{{"ledger", "tool"}, {"notes", "tool"}, {"bot", "agent"}} {
		if _, err := m.Join(ctx, n.name, n.kind); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.ApplyPolicy(ctx, aggregatePolicy(false)); err != nil {
		t.Fatal(err)
	}
	ledgerURL, err := m.StartLedger()
	if err != nil {
		t.Fatal(err)
	}
	startNamedGateway(t, ctx, m, "ledger", ledgerURL)
	stopNotes := startNamedGateway(t, ctx, m, "notes", startNotes(t))

	ready := make(chan engine.Serving, 1)
	errc := make(chan error, 1)
	cctx, stopConnect := context.WithCancel(ctx)
	go func() {
		errc <- engine.Connect(cctx, engine.ConnectConfig{State: filepath.Join(m.Dir, "bot"), All: true, Listen: "127.0.0.1:0",
			Logger: m.log(), Ready: func(s engine.Serving) { ready <- s }})
	}()
	t.Cleanup(func() {
		stopConnect()
		if err := <-errc; err != nil {
			t.Errorf("connect --all: %v", err)
		}
	})
	var s engine.Serving
	select {
	case s = <-ready:
	case err := <-errc:
		errc <- err
		t.Fatalf("connect --all: %v", err)
	}
	token, err := os.ReadFile(s.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 16)
	cl := mcp.NewClient(&mcp.Implementation{Name: "bot", Version: "test"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: loopback.WithToken(tr, strings.TrimSpace(string(token)))}
	// A session (2025-11-25): the SDK client keeps initialize's _meta only
	// for it; the endpoint's stateless 2026-07-28 answer carries the same
	// _meta in server/discover (internal/aggregate's tests read it raw).
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL, HTTPClient: hc, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })

	// The handshake says who the agent is and under which policy.
	meta, ok := cs.InitializeResult().Meta[aggregate.MetaKey].(map[string]any)
	if !ok || !strings.HasPrefix(fmt.Sprint(meta["spiffe_id"]), "spiffe://test.agentmesh/") || meta["policy_version"] == nil {
		t.Fatalf("initialize _meta.%s = %v", aggregate.MetaKey, cs.InitializeResult().Meta)
	}

	list := func() []string {
		t.Helper()
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		return names
	}
	// waitList polls until the list is want (the services connect, and
	// the changes arrive, in the background).
	waitList := func(want ...string) {
		t.Helper()
		for got := list(); !slices.Equal(got, want); got = list() {
			select {
			case <-ctx.Done():
				t.Fatalf("tools = %v, want %v", got, want)
			case <-changed:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitList("ledger__balance", "ledger__history", "notes__read")

	call := func(name string, args map[string]any) (string, error) {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			return "", err
		}
		if res.IsError || len(res.Content) == 0 {
			return "", fmt.Errorf("%s: tool error %v", name, res.Content)
		}
		return res.Content[0].(*mcp.TextContent).Text, nil
	}
	if _, err := call("ledger__balance", map[string]any{"account": "alice"}); err != nil {
		t.Fatal(err)
	}
	if got, err := call("notes__read", map[string]any{"text": "x"}); err != nil || got != "read ok" {
		t.Fatalf("notes__read = %q, %v", got, err)
	}
	// The ledger gateway's when denies bob's balance: its JSON-RPC error
	// comes back as it gave it.
	_, err = call("ledger__balance", map[string]any{"account": "bob"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -32040 {
		t.Fatalf("a denied call: %v, want the gateway's denial (-32040)", err)
	}

	// A policy change adding notes' write: list_changed, and it is there.
	drain(changed)
	if _, err := m.ApplyPolicy(ctx, aggregatePolicy(true)); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, ctx, changed)
	waitList("ledger__balance", "ledger__history", "notes__read", "notes__write")
	if got, err := call("notes__write", nil); err != nil || got != "write ok" {
		t.Fatalf("notes__write = %q, %v", got, err)
	}

	// The notes gateway stops: its tools go, the ledger's still work.
	drain(changed)
	stopNotes()
	waitChanged(t, ctx, changed)
	waitList("ledger__balance", "ledger__history")
	if _, err := call("ledger__history", nil); err != nil {
		t.Fatal(err)
	}

	// The same endpoint over stdio, as an MCP client's command runs it.
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	sctx, stopStdio := context.WithCancel(ctx)
	stdioDone := make(chan error, 1)
	go func() {
		stdioDone <- engine.Connect(sctx, engine.ConnectConfig{State: filepath.Join(m.Dir, "bot"), All: true,
			Stdin: inR, Stdout: outW, Logger: m.log()})
		outW.Close()
	}()
	defer func() {
		stopStdio()
		inW.Close()
		if err := <-stdioDone; err != nil {
			t.Errorf("connect --all over stdio: %v", err)
		}
	}()
	scs, err := mcp.NewClient(&mcp.Implementation{Name: "bot-stdio", Version: "test"}, nil).
		Connect(ctx, &mcp.IOTransport{Reader: outR, Writer: inW}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer scs.Close()
	for {
		res, err := scs.CallTool(ctx, &mcp.CallToolParams{Name: "ledger__balance", Arguments: map[string]any{"account": "alice"}})
		if err == nil && !res.IsError {
			break
		}
		// Until the ledger's session is up its tool is unknown.
		select {
		case <-ctx.Done():
			t.Fatalf("ledger__balance over stdio: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func drain(c chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func waitChanged(t *testing.T, ctx context.Context, c chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed")
	}
}
