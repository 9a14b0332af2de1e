package mesh_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/mesh"
)

// policy grants agent:fraud echo and query (without DELETE) on both
// ledgers; drop_table is served but granted to nobody.
const policy = `{
  "grants": [
    { "src": ["agent:fraud"], "dst": ["tool:ledger-gw", "tool:ledger-lib"], "tools": ["echo", "query"],
      "when": "tool.name != 'query' || !args.sql.matches(r'(?i)\\bdelete\\b')" },
  ],
}`

// noEcho is policy without echo.
const noEcho = `{
  "grants": [
    { "src": ["agent:fraud"], "dst": ["tool:ledger-gw", "tool:ledger-lib"], "tools": ["query"] },
  ],
}`

type textIn struct {
	Text string `json:"text,omitempty"`
	SQL  string `json:"sql,omitempty"`
}

// toolServer is the MCP server both ledgers serve: the same tools behind
// 'agentmesh serve' and behind the library.
func toolServer() http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: "ledger", Version: "1"}, nil)
	for _, name := range []string{"echo", "query", "drop_table"} {
		mcp.AddTool(s, &mcp.Tool{Name: name}, func(_ context.Context, _ *mcp.CallToolRequest, in textIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + ":" + in.Text + in.SQL}}}, nil, nil
		})
	}
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
}

// world is a real coordinator with an agent, a tool node served by
// 'agentmesh serve' (engine.ServeGateway) in front of toolServer over
// HTTP, and a tool node serving toolServer through the library.
type world struct {
	m     *coordinatortest.Mesh
	agent *mesh.Node

	mu      sync.Mutex
	callers []mesh.Caller // of every request the library's handler saw
}

func newWorld(t *testing.T) *world {
	t.Helper()
	m := coordinatortest.Start(t, coordinatortest.Options{})
	m.ApplyPolicy(policy)
	agentDir := m.Join("agent", "fraud")
	gwDir, libDir := m.Join("tool", "ledger-gw"), m.Join("tool", "ledger-lib")
	ctx, cancel := context.WithCancel(context.Background())
	var stops []chan error
	t.Cleanup(func() {
		cancel()
		for _, s := range stops {
			if err := <-s; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})

	up := httptest.NewServer(toolServer())
	t.Cleanup(up.Close)
	gwReady, gwDone := make(chan struct{}), make(chan error, 1)
	stops = append(stops, gwDone)
	go func() {
		gwDone <- engine.ServeGateway(ctx, engine.GatewayConfig{State: gwDir, Listen: "127.0.0.1:0", UpstreamURL: up.URL + "/mcp",
			Ready: func(engine.Serving) { close(gwReady) }})
	}()

	lib, err := mesh.Open(ctx, libDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	w := &world{m: m}
	mcpHandler := toolServer()
	handler := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c, ok := mesh.CallerOf(r)
		if !ok && r.Method != http.MethodDelete {
			// Only the gateway's own DELETE, ending a session it cut,
			// comes from nobody.
			t.Errorf("the library's handler got a %s without a caller", r.Method)
		}
		w.mu.Lock()
		w.callers = append(w.callers, c)
		w.mu.Unlock()
		mcpHandler.ServeHTTP(rw, r)
	})
	libReady, libDone := make(chan struct{}), make(chan error, 1)
	stops = append(stops, libDone)
	go func() {
		libDone <- lib.Serve(ctx, handler, &mesh.ServeOptions{Ready: func(string) { close(libReady) }})
	}()
	for _, c := range []chan struct{}{gwReady, libReady} {
		select {
		case <-c:
		case <-time.After(30 * time.Second):
			t.Fatal("a server did not start")
		}
	}
	agent, err := mesh.Open(ctx, agentDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Close() })
	w.agent = agent
	return w
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect opens an MCP session from the agent to service, through the
// library's client.
func (w *world) connect(t *testing.T, ctx context.Context, service string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: mesh.ServiceURL(service), HTTPClient: w.agent.HTTPClient(), MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", service, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// refusal is what a denied call says: the JSON-RPC code and the reason.
type refusal struct {
	Code   int64
	Reason string
	Event  string
}

func refusalOf(err error) (refusal, bool) {
	var we *jsonrpc.Error
	if !errors.As(err, &we) {
		return refusal{}, false
	}
	var d struct {
		Reason  string `json:"reason"`
		EventID string `json:"event_id"`
	}
	_ = json.Unmarshal(we.Data, &d)
	return refusal{Code: we.Code, Reason: d.Reason, Event: d.EventID}, true
}

// trail returns the coordinator's audit events recorded by dst.
func (w *world) trail(t *testing.T, ctx context.Context, dst string) []audit.Event {
	t.Helper()
	body, err := w.m.Admin.Stream(ctx, controlapi.PathAudit+"?order=asc")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var out []audit.Event
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Dst == dst {
			out = append(out, e)
		}
	}
	return out
}

// eventually calls cond until it holds or ctx ends: for what arrives
// asynchronously by design (a netmap, a shipped audit batch).
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// outcome is what one call showed the client and wrote to the trail,
// without what differs between runs and servers (ids, times, names).
type outcome struct {
	Text             string
	Refusal          refusal
	Kind, Decision   string
	Reason, Tool     string
	Outcome, Rule    string
	PolicyVersionSet bool
}

// TestLibraryServerDecidesAndAuditsAsTheGateway runs one table of calls
// from a library agent to a tool server behind 'agentmesh serve' and to
// the same server behind the library, and requires the same answers,
// reason codes and audit events, as the coordinator stores them.
func TestLibraryServerDecidesAndAuditsAsTheGateway(t *testing.T) {
	w := newWorld(t)
	ctx := testContext(t)
	calls := []struct {
		name, tool string
		args       textIn
	}{
		{"allowed", "echo", textIn{Text: "hi"}},
		{"outside the grant", "drop_table", textIn{Text: "users"}},
		{"when false", "query", textIn{SQL: "DELETE FROM t"}},
		{"when true", "query", textIn{SQL: "select 1"}},
		{"unknown tool", "no_such_tool", textIn{}},
	}
	results := map[string][]outcome{}
	for _, svc := range []string{"ledger-gw", "ledger-lib"} {
		cs := w.connect(t, ctx, svc)
		tools, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range tools.Tools {
			names = append(names, tl.Name)
		}
		if strings.Join(names, ",") != "echo,query" {
			t.Errorf("%s lists %v, want the granted echo,query", svc, names)
		}
		var events []string
		for _, c := range calls {
			var o outcome
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: c.tool, Arguments: c.args})
			if err != nil {
				r, ok := refusalOf(err)
				if !ok {
					t.Fatalf("%s %s: %v", svc, c.name, err)
				}
				o.Refusal, events = r, append(events, r.Event)
				o.Refusal.Event = ""
			} else {
				o.Text = res.Content[0].(*mcp.TextContent).Text
				events = append(events, "")
			}
			results[svc] = append(results[svc], o)
		}
		// The coordinator's trail has every decision, shipped from the
		// server's spool.
		dst := "spiffe://test.mesh/tool/" + svc
		var trail []audit.Event
		eventually(t, ctx, "the audit trail of "+svc, func() bool {
			trail = w.trail(t, ctx, dst)
			n := 0
			for _, e := range trail {
				if e.Kind == audit.KindRequest && e.Method == "tools/call" {
					n++
				}
			}
			return n >= len(calls)
		})
		var calls2 []audit.Event
		for _, e := range trail {
			if e.Kind == audit.KindRequest && e.Method == "tools/call" {
				calls2 = append(calls2, e)
			}
		}
		for i := range calls {
			e := calls2[i]
			if events[i] != "" && e.ID != events[i] {
				t.Errorf("%s %s: the refusal names event %s, the trail has %s", svc, calls[i].name, events[i], e.ID)
			}
			o := &results[svc][i]
			o.Kind, o.Decision, o.Reason, o.Tool = string(e.Kind), string(e.Decision), string(e.Reason), e.Tool
			o.Outcome, o.Rule, o.PolicyVersionSet = string(e.Outcome), e.Rule, e.PolicyVersion != ""
		}
	}
	gw, lib := results["ledger-gw"], results["ledger-lib"]
	for i, c := range calls {
		if gw[i] != lib[i] {
			t.Errorf("%s:\n  gateway %+v\n  library %+v", c.name, gw[i], lib[i])
		}
	}
	// The table is worth comparing only if it holds allows and denials.
	want := []string{"allowed", "not_granted", "when_false", "allowed", "not_granted"}
	for i, o := range gw {
		if o.Reason != want[i] {
			t.Errorf("%s: reason %s, want %s", calls[i].name, o.Reason, want[i])
		}
	}
	if gw[0].Text != "echo:hi" || gw[0].Outcome != "ok" {
		t.Errorf("allowed call: %+v", gw[0])
	}
	// The handler was told who called.
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.callers) == 0 {
		t.Fatal("the library's handler saw no request")
	}
	for _, c := range w.callers {
		if c.ID == "" {
			continue
		}
		if c.ID != "spiffe://test.mesh/agent/fraud" || c.Name != "fraud" || c.Kind != "agent" {
			t.Fatalf("caller %+v, want agent fraud", c)
		}
	}
	if _, ok := mesh.CallerOf(httptest.NewRequest(http.MethodPost, "/mcp", nil)); ok {
		t.Error("CallerOf names a caller for a request that did not come through Serve")
	}
}

// TestLibraryServerAppliesPolicyChangesAndRevocationLive: on a running
// library server, a new policy applies to an open session, and a revoked
// agent is cut off, with the gateway's reasons and audit events.
func TestLibraryServerAppliesPolicyChangesAndRevocationLive(t *testing.T) {
	w := newWorld(t)
	ctx := testContext(t)
	cs := w.connect(t, ctx, "ledger-lib")
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: textIn{Text: "before"}}); err != nil {
		t.Fatal(err)
	}
	w.m.ApplyPolicy(noEcho)
	var last refusal
	eventually(t, ctx, "echo denied under the new policy", func() bool {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: textIn{Text: "after"}})
		last, _ = refusalOf(err)
		return err != nil
	})
	if last.Reason != "not_granted" {
		t.Fatalf("echo after the policy change: %+v, want not_granted", last)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "query", Arguments: textIn{SQL: "select 2"}}); err != nil {
		t.Fatalf("query still granted: %v", err)
	}

	if err := w.m.Admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/fraud/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	dst := "spiffe://test.mesh/tool/ledger-lib"
	eventually(t, ctx, "the revoked agent's session closed and audited", func() bool {
		for _, e := range w.trail(t, ctx, dst) {
			if e.Kind == audit.KindSession && e.Reason == "revoked" && e.Outcome == audit.OutcomeClosed {
				return true
			}
		}
		return false
	})
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "query", Arguments: textIn{SQL: "select 3"}})
	if err == nil {
		t.Fatal("a revoked agent's call went through")
	}
	// A new connection is refused as revoked too: by the agent's own node
	// once it knows, else by the server.
	resp, err := w.agent.HTTPClient().Get(mesh.ServiceURL("ledger-lib"))
	var ue *mesh.UnreachableError
	switch {
	case errors.As(err, &ue):
		if ue.Reason != "revoked" {
			t.Fatalf("a revoked agent's request: %v", err)
		}
	case err != nil:
		t.Fatalf("a revoked agent's request: %v, want revoked", err)
	default:
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), `"revoked"`) {
			t.Fatalf("a revoked agent's request: %d %s, want 403 revoked", resp.StatusCode, b)
		}
	}
}

// TestClientRefusesWhatIsNotAMeshService: the client sends only to
// https://NAME/... with NAME a service in the netmap, and says why not.
func TestClientRefusesWhatIsNotAMeshService(t *testing.T) {
	w := newWorld(t)
	ctx := testContext(t)
	tests := []struct{ url, want string }{
		{"http://ledger-lib/mcp", "https://NAME/PATH"},
		{"https://ledger-lib:443/mcp", "https://NAME/PATH"},
		{"https://no-such-service/mcp", "unknown_service"},
		{"https://fraud/mcp", "unknown_service"}, // an agent serves nothing
	}
	for _, tt := range tests {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tt.url, strings.NewReader("{}"))
		_, err := w.agent.HTTPClient().Do(req)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error saying %s", tt.url, err, tt.want)
		}
	}
}

// TestServeRefusesAnAgentNode: only tool nodes serve.
func TestServeRefusesAnAgentNode(t *testing.T) {
	w := newWorld(t)
	err := w.agent.Serve(testContext(t), toolServer(), nil)
	if !errors.Is(err, mesh.ErrConfig) || !strings.Contains(err.Error(), "only tool and model nodes serve") {
		t.Fatalf("Serve on an agent node: %v", err)
	}
}
