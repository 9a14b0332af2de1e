package connector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
)

// versions are the protocol versions the connector must carry; "" is the
// SDK's default (the latest, stateless 2026-07-28).
var versions = []struct {
	name, version, want string
}{
	{"2025-03-26", "2025-03-26", "2025-03-26"},
	{"2025-06-18", "2025-06-18", "2025-06-18"},
	{"2025-11-25", "2025-11-25", "2025-11-25"},
	{"2026-07-28", "", "2026-07-28"},
}

func TestStdioCarriesInitializeListAndCall(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testContext(t)
			cs, wait := connectStdio(t, ctx, e.conn, newClient(nil), v.version)
			if got := cs.InitializeResult().ProtocolVersion; got != v.want {
				t.Errorf("negotiated %q, want %q", got, v.want)
			}
			tools, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("ListTools: %v", err)
			}
			if len(tools.Tools) != 4 {
				t.Errorf("ListTools returned %d tools, want 4", len(tools.Tools))
			}
			if got, err := callEcho(ctx, cs, "hi"); err != nil || got != "hi" {
				t.Errorf("echo = %q, %v; want hi", got, err)
			}
			prompts, err := cs.ListPrompts(ctx, nil)
			if err != nil || len(prompts.Prompts) != 1 {
				t.Fatalf("ListPrompts = %v, %v", prompts, err)
			}
			if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet"}); err != nil {
				t.Errorf("GetPrompt: %v", err)
			}
			res, err := cs.ListResources(ctx, nil)
			if err != nil || len(res.Resources) != 1 {
				t.Fatalf("ListResources = %v, %v", res, err)
			}
			rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://hello"})
			if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "hello world" {
				t.Errorf("ReadResource = %v, %v", rr, err)
			}
			if err := wait(); err != nil {
				t.Errorf("ServeStdio: %v", err)
			}
		})
	}
}

func TestStdioRelaysProgressNotifications(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testContext(t)
			ev := newEvents()
			cs, _ := connectStdio(t, ctx, e.conn, newClient(ev), v.version)
			params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"text": "x"}}
			params.SetProgressToken("tok-1")
			if _, err := cs.CallTool(ctx, params); err != nil {
				t.Fatalf("CallTool: %v", err)
			}
			// Progress notifications travel on the call's stream before its
			// response, so all three have been handled... once delivered by
			// the client's dispatcher; wait for them.
			for i := 1; i <= 3; i++ {
				select {
				case msg := <-ev.progress:
					if want := fmt.Sprintf("step %d", i); msg != want {
						t.Errorf("progress %d = %q, want %q", i, msg, want)
					}
				case <-ctx.Done():
					t.Fatalf("progress notification %d never arrived", i)
				}
			}
		})
	}
}

func TestStdioCarriesSamplingRoundTrip(t *testing.T) {
	for _, v := range versions[:3] { // sampling requests exist before 2026-07-28
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testContext(t)
			cs, _ := connectStdio(t, ctx, e.conn, newClient(nil), v.version)
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "sample", Arguments: map[string]any{"text": "ping"}})
			if err != nil {
				t.Fatalf("CallTool: %v", err)
			}
			if res.IsError {
				t.Fatalf("tool error: %v", res.Content)
			}
			if got := res.StructuredContent.(map[string]any)["echo"]; got != "model says: ping" {
				t.Errorf("sample returned %v, want the client's model answer", got)
			}
		})
	}
}

func TestStdioDeliversToolListChanged(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testContext(t)
			ev := newEvents()
			cs, _ := connectStdio(t, ctx, e.conn, newClient(ev), v.version)
			// The notification goes to the standalone GET stream or the
			// subscriptions/listen stream: wait until the server has set it up.
			select {
			case <-e.up.streamReady:
			case <-ctx.Done():
				t.Fatal("the connector never opened a stream for server messages")
			}
			mcp.AddTool(e.up.server, &mcp.Tool{Name: "late_" + v.name}, func(context.Context, *mcp.CallToolRequest, echoIn) (*mcp.CallToolResult, echoOut, error) {
				return nil, echoOut{}, nil
			})
			select {
			case <-ev.toolsChange:
			case <-ctx.Done():
				t.Fatal("tools/list_changed never reached the client")
			}
			tools, err := cs.ListTools(ctx, nil)
			if err != nil || len(tools.Tools) != 5 {
				t.Errorf("ListTools after change = %v, %v; want 5 tools", tools, err)
			}
		})
	}
}

func TestStdioDeletesSessionOnEOF(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	cs, wait := connectStdio(t, ctx, e.conn, newClient(nil), "2025-11-25")
	if _, err := callEcho(ctx, cs, "x"); err != nil {
		t.Fatal(err)
	}
	id := ""
	if calls := e.up.recordedRequests("POST tools/call"); len(calls) == 1 {
		id = calls[0].header.Get("Mcp-Session-Id")
	}
	if id == "" {
		t.Fatal("no session id on tools/call")
	}
	if err := wait(); err != nil {
		t.Fatalf("ServeStdio after EOF: %v", err)
	}
	dels := e.up.recordedRequests("DELETE ")
	if len(dels) != 1 || dels[0].header.Get("Mcp-Session-Id") != id {
		t.Errorf("DELETE requests = %d (%v), want one for session %s", len(dels), dels, id)
	}
}

func TestStdioReturnsWhenContextEnds(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(testContext(t))
	agentR, agentW := io.Pipe()
	defer agentW.Close()
	done := make(chan error, 1)
	go func() { done <- e.conn.ServeStdio(ctx, agentR, io.Discard) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("ServeStdio = %v, want context.Canceled", err)
	}
	agentR.Close() // lets the reader blocked on the pipe exit
}

// interceptMethod makes the upstream answer JSON-RPC method m with status
// and body instead of serving it. {{ID}} in body is replaced by the
// request's id.
func interceptMethod(u *upstream, m string, status int, contentType, body string) {
	f := func(w http.ResponseWriter, r *http.Request, b []byte) bool {
		var env struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		if json.Unmarshal(b, &env) != nil || env.Method != m {
			return false
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, strings.ReplaceAll(body, "{{ID}}", string(env.ID)))
		return true
	}
	u.intercept.Store(&f)
}

func TestStdioAnswersGatewayHTTPErrorsWithJSONRPCErrors(t *testing.T) {
	tests := []struct {
		name, contentType, body string
		status                  int
		wantCode                int64
		wantMessage             string
	}{
		{"forbidden", "text/plain", "denied by test\n", http.StatusForbidden, connector.CodeGatewayHTTPError, "HTTP 403 Forbidden: denied by test"},
		{"bad gateway", "text/plain", "", http.StatusBadGateway, connector.CodeGatewayHTTPError, "HTTP 502"},
		{"unavailable", "text/html", "<html>\n<b>down</b>", http.StatusServiceUnavailable, connector.CodeGatewayHTTPError, "HTTP 503 Service Unavailable: <html>"},
		{"error body without id", "application/json", `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"bad request"}}`, http.StatusBadRequest, -32600, "bad request"},
		{"policy denial with 403", "application/json", `{"jsonrpc":"2.0","id":{{ID}},"error":{"code":-32040,"message":"denied by policy","data":{"reason":"tool_not_granted","event_id":"ev-1"}}}`, http.StatusForbidden, -32040, "denied by policy"},
		{"policy denial with 200", "application/json", `{"jsonrpc":"2.0","id":{{ID}},"error":{"code":-32040,"message":"denied by policy","data":{"reason":"tool_not_granted","event_id":"ev-2"}}}`, http.StatusOK, -32040, "denied by policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testContext(t)
			cs, _ := connectStdio(t, ctx, e.conn, newClient(nil), "2025-11-25")
			interceptMethod(e.up, "tools/call", tt.status, tt.contentType, tt.body)
			_, err := callEcho(ctx, cs, "x")
			var werr *jsonrpc.Error
			if !errors.As(err, &werr) {
				t.Fatalf("CallTool error = %v, want a JSON-RPC error", err)
			}
			if werr.Code != tt.wantCode || !strings.Contains(werr.Message, tt.wantMessage) {
				t.Errorf("error = %d %q, want %d containing %q", werr.Code, werr.Message, tt.wantCode, tt.wantMessage)
			}
			if tt.wantCode == -32040 && !strings.Contains(string(werr.Data), `"reason":"tool_not_granted"`) {
				t.Errorf("error data = %s, want the gateway's data untouched", werr.Data)
			}
			// The session still works afterwards.
			e.up.intercept.Store(nil)
			if got, err := callEcho(ctx, cs, "after"); err != nil || got != "after" {
				t.Errorf("echo after error = %q, %v", got, err)
			}
		})
	}
}

func TestStdioReconnectsAfterGatewayRestart(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	cs, _ := connectStdio(t, ctx, e.conn, newClient(nil), "") // stateless protocol
	if _, err := callEcho(ctx, cs, "before"); err != nil {
		t.Fatal(err)
	}
	e.gw.Restart(t)
	// A call that races the restart on the old connection may fail (it was
	// written, so it is not replayed); the next one must work.
	got, err := callEcho(ctx, cs, "after")
	if err != nil {
		var werr *jsonrpc.Error
		if !errors.As(err, &werr) || werr.Code != connector.CodeGatewayUnreachable {
			t.Fatalf("echo racing the restart = %v, want success or CodeGatewayUnreachable", err)
		}
		got, err = callEcho(ctx, cs, "after")
	}
	if err != nil || got != "after" {
		t.Errorf("echo after restart = %q, %v", got, err)
	}
}

func TestStdioReportsExpiredSessionAfterGatewayRestart(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	cs, wait := connectStdio(t, ctx, e.conn, newClient(nil), "2025-11-25")
	if _, err := callEcho(ctx, cs, "before"); err != nil {
		t.Fatal(err)
	}
	e.up.reset() // the new gateway knows no sessions
	e.gw.Restart(t)
	_, err := callEcho(ctx, cs, "after")
	var werr *jsonrpc.Error
	if errors.As(err, &werr) && werr.Code == connector.CodeGatewayUnreachable {
		_, err = callEcho(ctx, cs, "after") // raced the restart, see above
	}
	if !errors.As(err, &werr) || werr.Code != connector.CodeGatewayHTTPError || !strings.Contains(string(werr.Data), "404") {
		t.Fatalf("CallTool after restart = %v, want a gateway HTTP error with status 404", err)
	}
	if err := wait(); err != nil {
		t.Errorf("ServeStdio: %v", err)
	}
	if dels := e.up.recordedRequests("DELETE "); len(dels) != 0 {
		t.Errorf("sent %d DELETEs for an expired session", len(dels))
	}
}

func TestConnectorFollowsGatewayToNewAddress(t *testing.T) {
	ca := connectortest.NewCA(t)
	up := newUpstream(t)
	gw1 := connectortest.StartGateway(t, ca, up)
	gw2 := connectortest.StartGateway(t, ca, up)
	var current atomic.Pointer[connectortest.Gateway]
	current.Store(gw1)
	var resolves atomic.Int32
	c, err := connector.New(connector.Config{
		Resolve: func(ctx context.Context) (string, error) {
			resolves.Add(1)
			return current.Load().Resolve(ctx)
		},
		TLS: ca.ClientTLS(t, "spiffe://test.mesh/agent/tester"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testContext(t)
	cs, _ := connectStdio(t, ctx, c, newClient(nil), "")
	if _, err := callEcho(ctx, cs, "one"); err != nil {
		t.Fatal(err)
	}
	gw1.Close()
	current.Store(gw2)
	before := resolves.Load()
	if got, err := callEcho(ctx, cs, "two"); err != nil || got != "two" {
		t.Fatalf("echo after move = %q, %v", got, err)
	}
	if resolves.Load() == before {
		t.Error("the new connection was made without resolving again")
	}
}

func TestStdioStatelessProtocolSendsMethodHeaders(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	cs, _ := connectStdio(t, ctx, e.conn, newClient(nil), "")
	if _, err := callEcho(ctx, cs, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://hello"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ what, method, name string }{
		{"POST tools/call", "tools/call", "echo"},
		{"POST resources/read", "resources/read", "test://hello"},
		{"POST tools/list", "tools/list", ""},
		{"POST server/discover", "server/discover", ""},
	}
	for _, tt := range tests {
		reqs := e.up.recordedRequests(tt.what)
		if len(reqs) == 0 {
			t.Errorf("%s: not received", tt.what)
			continue
		}
		if p := reqs[len(reqs)-1].proto; p != "HTTP/2.0" {
			t.Errorf("%s: sent over %s, want HTTP/2.0", tt.what, p)
		}
		h := reqs[len(reqs)-1].header
		if got := h.Get("Mcp-Method"); got != tt.method {
			t.Errorf("%s: Mcp-Method = %q, want %q", tt.what, got, tt.method)
		}
		if got := h.Get("Mcp-Name"); got != tt.name {
			t.Errorf("%s: Mcp-Name = %q, want %q", tt.what, got, tt.name)
		}
		if got := h.Get("Mcp-Protocol-Version"); got != "2026-07-28" {
			t.Errorf("%s: Mcp-Protocol-Version = %q", tt.what, got)
		}
		if got := h.Get("Mcp-Session-Id"); got != "" {
			t.Errorf("%s: Mcp-Session-Id = %q on the stateless protocol", tt.what, got)
		}
	}
}

func TestStdioSendsConcurrentRequestsConcurrently(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	cs, _ := connectStdio(t, ctx, e.conn, newClient(nil), "2025-11-25")
	// The barrier tool only returns once three calls wait in it together:
	// serialized round trips would never get there.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		wg.Go(func() {
			_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "barrier", Arguments: map[string]any{"text": fmt.Sprint(i)}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("barrier call: %v", err)
		}
	}
}
