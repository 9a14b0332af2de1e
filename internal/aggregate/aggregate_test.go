package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstream is an MCP server with the named tools, each answering its own
// name; a tool named "deny" fails with a JSON-RPC error as a gateway's
// denial does.
func upstream(instructions string, tools ...string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, &mcp.ServerOptions{Instructions: instructions})
	for _, name := range tools {
		s.AddTool(&mcp.Tool{Name: name, Description: "the " + name, InputSchema: map[string]any{"type": "object"}},
			func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				if name == "deny" {
					return nil, &jsonrpc.Error{Code: -32040, Message: "denied by policy"}
				}
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name}}}, nil
			})
	}
	return s
}

// fixture serves upstreams in memory: Transport connects a new server
// session of the service's upstream; a service without one is down.
type fixture struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	up  map[string]*mcp.Server
	ss  []*mcp.ServerSession
}

func (f *fixture) transport(s Service) (mcp.Transport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	srv := f.up[s.Name]
	if srv == nil {
		return nil, errors.New("connection refused")
	}
	ct, st := mcp.NewInMemoryTransports()
	ss, err := srv.Connect(f.ctx, st, nil)
	if err != nil {
		return nil, err
	}
	f.ss = append(f.ss, ss)
	return ct, nil
}

func (f *fixture) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.ss {
		s.Close()
	}
}

func newFixture(t *testing.T, up map[string]*mcp.Server) (*Aggregator, *mcp.ClientSession, chan struct{}) {
	return newFixtureWith(t, up, fixtureOptions{})
}

// fixtureOptions are newFixtureWith's options.
type fixtureOptions struct {
	sep     string             // the aggregator's separator
	client  *mcp.ClientOptions // list_changed handlers are set over them
	version string             // the client's protocol version ("": the SDK's latest)
	// services, if set, are aggregated (and settled) before the client
	// initializes, so that it is offered their capabilities.
	services []Service
}

// newFixtureWith is newFixture with options; list_changed of any kind
// signals the returned channel.
func newFixtureWith(t *testing.T, up map[string]*mcp.Server, o fixtureOptions) (*Aggregator, *mcp.ClientSession, chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	f := &fixture{t: t, ctx: ctx, up: up}
	a, err := New(Config{SPIFFEID: "spiffe://test/agent/bot", Transport: f.transport, ListTimeout: 200 * time.Millisecond, Separator: o.sep})
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 16)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	opts := o.client
	if opts == nil {
		opts = &mcp.ClientOptions{}
	}
	if o.services != nil {
		a.Update(Snapshot{Services: o.services})
		if err := a.WaitSettled(ctx); err != nil {
			t.Fatal(err)
		}
	}
	opts.ToolListChangedHandler = func(context.Context, *mcp.ToolListChangedRequest) { signal() }
	opts.PromptListChangedHandler = func(context.Context, *mcp.PromptListChangedRequest) { signal() }
	opts.ResourceListChangedHandler = func(context.Context, *mcp.ResourceListChangedRequest) { signal() }
	cl := mcp.NewClient(&mcp.Implementation{Name: "client", Version: "1"}, opts)
	ct, st := mcp.NewInMemoryTransports()
	ss, err := a.Server().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cl.Connect(ctx, ct, &mcp.ClientSessionOptions{ProtocolVersion: o.version})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.Close()
		ss.Close()
		a.Close()
		f.close()
		cancel()
	})
	return a, cs, changed
}

// waitTools polls the client's list until it is want.
func waitTools(t *testing.T, cs *mcp.ClientSession, changed chan struct{}, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tl := range res.Tools {
			got = append(got, tl.Name)
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tools = %v, want %v", got, want)
		case <-changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestNoServiceShadowsAnother: tools and services whose names contain
// the separator are skipped, so every aggregated name has one reading;
// the others are namespaced and keep their definitions.
func TestNoServiceShadowsAnother(t *testing.T) {
	a, cs, changed := newFixture(t, map[string]*mcp.Server{
		"a":    upstream("", "x", "b__x", "deny"),
		"a__b": upstream("", "x"),
		"c":    upstream("Use c wisely.", "x"),
	})
	a.Update(Snapshot{PolicyVersion: 3, Services: []Service{{Name: "a", Addr: "1"}, {Name: "a__b", Addr: "2"}, {Name: "c", Addr: "3"}}})
	waitTools(t, cs, changed, "a__deny", "a__x", "c__x")
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range res.Tools {
		if want := "the " + tl.Name[strings.Index(tl.Name, Separator)+len(Separator):]; tl.Description != want {
			t.Errorf("%s: description %q, want the gateway's %q", tl.Name, tl.Description, want)
		}
	}
}

// TestCallsAreRoutedAndErrorsPassThrough: a call reaches its own
// service under the tool's own name, and an upstream's JSON-RPC error
// comes back with its code.
func TestCallsAreRoutedAndErrorsPassThrough(t *testing.T) {
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"a": upstream("", "x", "deny"), "b": upstream("", "y")})
	a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}, {Name: "b", Addr: "2"}}})
	waitTools(t, cs, changed, "a__deny", "a__x", "b__y")
	ctx := context.Background()
	for name, want := range map[string]string{"a__x": "x", "b__y": "y"} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name})
		if err != nil || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != want {
			t.Errorf("%s: %v, %v; want %q", name, res, err, want)
		}
	}
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__deny"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -32040 || je.Message != "denied by policy" {
		t.Fatalf("a__deny: %v, want the upstream's error unchanged", err)
	}
}

// TestASlowOrDownServiceOnlyLosesItsOwnTools: a service whose list never
// answers and one that cannot be reached leave the others listed; a
// service leaving the snapshot takes its tools with it, with
// list_changed.
func TestASlowOrDownServiceOnlyLosesItsOwnTools(t *testing.T) {
	slow := upstream("", "z")
	release := make(chan struct{})
	defer close(release)
	slow.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method == "tools/list" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return next(ctx, method, req)
		}
	})
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"a": upstream("", "x"), "b": upstream("", "y"), "slow": slow})
	a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}, {Name: "b", Addr: "2"}, {Name: "slow", Addr: "3"}, {Name: "down", Addr: "4"}}})
	// Once settled (the slow one's list timed out, the down one failed
	// to connect), the others are listed at once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitSettled(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := cs.ListTools(ctx, nil)
	if err != nil || len(res.Tools) != 2 {
		t.Fatalf("tools once settled: %v, %v; want a__x and b__y", res, err)
	}
	waitTools(t, cs, changed, "a__x", "b__y")
	for len(changed) > 0 {
		<-changed
	}
	a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}}})
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no list_changed when a service left")
	}
	waitTools(t, cs, changed, "a__x")
}

// TestInitializeTellsWhoAndUnderWhichPolicy: _meta.agentmesh and the
// upstreams' instructions, labelled by service.
func TestInitializeTellsWhoAndUnderWhichPolicy(t *testing.T) {
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"c": upstream("Use c wisely.", "x")})
	a.Update(Snapshot{PolicyVersion: 7, Services: []Service{{Name: "c", Addr: "1"}}})
	waitTools(t, cs, changed, "c__x")
	// A new client session sees the current state in its handshake.
	// The SDK's ClientSession keeps no _meta of the handshake (initialize,
	// or server/discover from 2026-07-28 on): read the raw result.
	var meta mcp.Meta
	var instructions string
	cl := mcp.NewClient(&mcp.Implementation{Name: "client2", Version: "1"}, nil)
	cl.AddSendingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			switch r := res.(type) {
			case *mcp.InitializeResult:
				meta, instructions = r.Meta, r.Instructions
			case *mcp.DiscoverResult:
				meta, instructions = r.Meta, r.Instructions
			}
			return res, err
		}
	})
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := a.Server().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs2, err := cl.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs2.Close()
	b, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	m, ok := got[MetaKey].(map[string]any)
	if !ok || m["spiffe_id"] != "spiffe://test/agent/bot" || m["policy_version"] != float64(7) || m["separator"] != Separator ||
		len(m["services"].([]any)) != 1 || m["services"].([]any)[0] != "c" {
		t.Fatalf("_meta = %s", b)
	}
	if !strings.Contains(instructions, "## c") || !strings.Contains(instructions, "Use c wisely.") {
		t.Fatalf("instructions = %q", instructions)
	}
}

// TestACallWithoutSessionSaysWhichServiceAndWhy: a call that finds its
// service down (its tools are being withdrawn) fails with -32051 and
// gateway_unreachable, naming the service and the reason.
func TestACallWithoutSessionSaysWhichServiceAndWhy(t *testing.T) {
	a, err := New(Config{Transport: func(Service) (mcp.Transport, error) { return nil, errors.New("unused") }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	be := newBackend(a, Service{Name: "notes"})
	be.down(errors.New("connect: connection refused"))
	_, err = be.call("read")(context.Background(), &mcp.CallToolRequest{Params: &mcp.CallToolParamsRaw{Name: "notes__read"}})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != CodeServiceUnavailable || !strings.Contains(je.Message, "notes") ||
		!strings.Contains(je.Message, "connection refused") || !strings.Contains(string(je.Data), "gateway_unreachable") {
		t.Fatalf("call without a session: %v", err)
	}
}

// TestForwardMetaKeepsTheCallersKeysOnly: the protocol's own keys and
// the progress token stay with the client's session; the caller's go on.
func TestForwardMetaKeepsTheCallersKeysOnly(t *testing.T) {
	got := forwardMeta(mcp.Meta{"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 1, "traceparent": "00-x"})
	if len(got) != 1 || got["traceparent"] != "00-x" {
		t.Fatalf("forwardMeta = %v", got)
	}
}
