package connector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestListenerProxiesMCP(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := testContext(t)
			ev := newEvents()
			cs := connectHTTP(t, ctx, serveListener(t, e.conn), newClient(ev), v.version)
			if got := cs.InitializeResult().ProtocolVersion; got != v.want {
				t.Errorf("negotiated %q, want %q", got, v.want)
			}
			if tools, err := cs.ListTools(ctx, nil); err != nil || len(tools.Tools) != 4 {
				t.Fatalf("ListTools = %v, %v", tools, err)
			}
			if got, err := callEcho(ctx, cs, "hi"); err != nil || got != "hi" {
				t.Errorf("echo = %q, %v", got, err)
			}
			if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet"}); err != nil {
				t.Errorf("GetPrompt: %v", err)
			}
			if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://hello"}); err != nil {
				t.Errorf("ReadResource: %v", err)
			}

			params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"text": "x"}}
			params.SetProgressToken("tok")
			if _, err := cs.CallTool(ctx, params); err != nil {
				t.Fatalf("progress tool: %v", err)
			}
			for i := 1; i <= 3; i++ {
				select {
				case <-ev.progress:
				case <-ctx.Done():
					t.Fatalf("progress notification %d never arrived", i)
				}
			}

			if v.want < "2026-07-28" {
				res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "sample", Arguments: map[string]any{"text": "ping"}})
				if err != nil || res.IsError {
					t.Fatalf("sample tool = %v, %v", res, err)
				}
				if got := res.StructuredContent.(map[string]any)["echo"]; got != "model says: ping" {
					t.Errorf("sample returned %v", got)
				}
			}

			select {
			case <-e.up.streamReady:
			case <-ctx.Done():
				t.Fatal("no stream for server messages was opened")
			}
			mcp.AddTool(e.up.server, &mcp.Tool{Name: "late"}, func(context.Context, *mcp.CallToolRequest, echoIn) (*mcp.CallToolResult, echoOut, error) {
				return nil, echoOut{}, nil
			})
			select {
			case <-ev.toolsChange:
			case <-ctx.Done():
				t.Fatal("tools/list_changed never reached the client")
			}
		})
	}
}

func TestListenerStatelessForwardsMethodHeaders(t *testing.T) {
	e := newEnv(t)
	ctx := testContext(t)
	cs := connectHTTP(t, ctx, serveListener(t, e.conn), newClient(nil), "")
	if _, err := callEcho(ctx, cs, "x"); err != nil {
		t.Fatal(err)
	}
	calls := e.up.recordedRequests("POST tools/call")
	if len(calls) != 1 {
		t.Fatalf("upstream saw %d tools/call", len(calls))
	}
	if m, n := calls[0].header.Get("Mcp-Method"), calls[0].header.Get("Mcp-Name"); m != "tools/call" || n != "echo" {
		t.Errorf("Mcp-Method, Mcp-Name = %q, %q; want tools/call, echo", m, n)
	}
}

// rawRequest sends one request to the listener with the given Host and
// headers, and returns the status and body.
func rawRequest(t *testing.T, endpoint, method, host string, header map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

var mcpHeaders = map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

func TestListenerRefusesDNSRebinding(t *testing.T) {
	e := newEnv(t)
	endpoint := serveListener(t, e.conn)
	_, port, _ := net.SplitHostPort(strings.TrimSuffix(strings.TrimPrefix(endpoint, "http://"), "/mcp"))
	tests := []struct {
		name, host, origin string
		wantStatus         int
	}{
		{"foreign host", "evil.example:" + port, "", http.StatusForbidden},
		{"rebound host without port", "evil.example", "", http.StatusForbidden},
		{"loopback name with another port", "localhost:1", "", http.StatusForbidden},
		{"foreign origin", "127.0.0.1:" + port, "http://evil.example", http.StatusForbidden},
		{"null origin", "127.0.0.1:" + port, "null", http.StatusForbidden},
		{"origin with loopback-looking subdomain", "127.0.0.1:" + port, "http://localhost.evil.example:" + port, http.StatusForbidden},
		{"ip host", "127.0.0.1:" + port, "", http.StatusOK},
		{"localhost host", "localhost:" + port, "", http.StatusOK},
		{"ipv6 host", "[::1]:" + port, "", http.StatusOK},
		{"loopback origin on another port", "localhost:" + port, "http://localhost:3000", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			for k, v := range mcpHeaders {
				h[k] = v
			}
			if tt.origin != "" {
				h["Origin"] = tt.origin
			}
			status, body := rawRequest(t, endpoint, http.MethodPost, tt.host, h, initializeBody)
			if status != tt.wantStatus {
				t.Errorf("status = %d (%s), want %d", status, strings.TrimSpace(body), tt.wantStatus)
			}
			if tt.wantStatus == http.StatusForbidden && !strings.Contains(body, `"reason":"not_local"`) {
				t.Errorf("refusal %s does not carry the reason not_local", body)
			}
			if tt.wantStatus == http.StatusForbidden && len(e.up.recordedRequests("POST initialize")) != 0 {
				t.Error("a refused request reached the gateway")
			}
		})
	}
	e.up.closeSessions()
}

// TestListenerDropsAgentCredentials: neither the endpoint's own token nor any
// other credential the agent sends leaves the machine.
func TestListenerDropsAgentCredentials(t *testing.T) {
	e := newEnv(t)
	endpoint := serveListener(t, e.conn)
	h := map[string]string{
		"Cookie":              "session=agent-secret",
		"Proxy-Authorization": "Basic c2VjcmV0",
		"X-Api-Key":           "agent-secret",
	}
	for k, v := range mcpHeaders {
		h[k] = v
	}
	if status, body := rawRequest(t, endpoint, http.MethodPost, "", h, initializeBody); status != http.StatusOK {
		t.Fatalf("initialize status %d: %s", status, body)
	}
	reqs := e.up.recordedRequests("POST initialize")
	if len(reqs) != 1 {
		t.Fatalf("gateway saw %d initialize requests", len(reqs))
	}
	for name, vv := range reqs[0].header {
		for _, v := range vv {
			if strings.Contains(v, "agent-secret") || strings.Contains(v, "c2VjcmV0") || strings.Contains(v, testToken) {
				t.Errorf("header %s: %q reached the gateway", name, v)
			}
		}
	}
	e.up.closeSessions()
}

func TestListenerPassesGatewayStatusThrough(t *testing.T) {
	e := newEnv(t)
	endpoint := serveListener(t, e.conn)
	interceptMethod(e.up, "initialize", http.StatusForbidden, "application/json",
		`{"jsonrpc":"2.0","id":{{ID}},"error":{"code":-32040,"message":"denied by policy","data":{"reason":"no_grant","event_id":"ev-9"}}}`)
	status, body := rawRequest(t, endpoint, http.MethodPost, "", mcpHeaders, initializeBody)
	if status != http.StatusForbidden || !strings.Contains(body, `"reason":"no_grant"`) {
		t.Errorf("got %d %s, want the gateway's 403 and JSON-RPC error", status, body)
	}
}

func TestListenerAnswersBadGatewayWhenUnreachable(t *testing.T) {
	e := newEnv(t)
	endpoint := serveListener(t, e.conn)
	e.gw.Close()
	status, _ := rawRequest(t, endpoint, http.MethodPost, "", mcpHeaders, initializeBody)
	if status != http.StatusBadGateway {
		t.Errorf("status = %d, want 502", status)
	}
}

func TestListenerRefusesOtherPathsAndMethods(t *testing.T) {
	e := newEnv(t)
	endpoint := serveListener(t, e.conn)
	if status, _ := rawRequest(t, strings.TrimSuffix(endpoint, "/mcp")+"/other", http.MethodPost, "", mcpHeaders, initializeBody); status != http.StatusNotFound {
		t.Errorf("other path: status %d, want 404", status)
	}
	if status, _ := rawRequest(t, endpoint, http.MethodPut, "", mcpHeaders, initializeBody); status != http.StatusMethodNotAllowed {
		t.Errorf("PUT: status %d, want 405", status)
	}
}

func TestListenRefusesNonLoopbackAddresses(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:0", true},
		{"localhost:0", true},
		{"[::1]:0", true},
		{"0.0.0.0:7801", false},
		{":7801", false},
		{"[::]:7801", false},
		{"10.1.2.3:1", false},
		{"example.com:80", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			ln, err := connector.Listen(tt.addr)
			if ln != nil {
				ln.Close()
			}
			if tt.ok && err != nil {
				if strings.Contains(tt.addr, "::1") && !errors.Is(err, connector.ErrNotLoopback) {
					t.Skipf("no IPv6 loopback here: %v", err)
				}
				t.Errorf("Listen(%q) = %v, want success", tt.addr, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("Listen(%q) succeeded, want an error", tt.addr)
			}
			if !tt.ok && tt.addr != "127.0.0.1" && !errors.Is(err, connector.ErrNotLoopback) {
				t.Errorf("Listen(%q) = %v, want ErrNotLoopback", tt.addr, err)
			}
		})
	}
}

func TestServeListenerRefusesNonLoopbackListener(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skipf("cannot listen on the wildcard address: %v", err)
	}
	err = e.conn.ServeListener(context.Background(), ln, loopback.Auth{NoToken: true})
	if !errors.Is(err, connector.ErrNotLoopback) {
		t.Errorf("ServeListener on %v = %v, want ErrNotLoopback", ln.Addr(), err)
	}
}

func TestServeListenerRefusesATCPEndpointWithoutAToken(t *testing.T) {
	e := newEnv(t)
	ln, err := connector.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.conn.ServeListener(context.Background(), ln, loopback.Auth{}); !errors.Is(err, connector.ErrNoToken) {
		t.Fatalf("ServeListener without a token = %v, want ErrNoToken", err)
	}
	// The listener was closed: nobody can reach an endpoint that refused
	// to start.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the refused listener still accepts connections")
	}
}

// TestListenerRefusesRequestsWithoutTheToken: another local user's process
// can reach the port, but without the endpoint's token every method is
// refused with a JSON-RPC error carrying local_auth, and nothing reaches
// the gateway.
func TestListenerRefusesRequestsWithoutTheToken(t *testing.T) {
	e := newEnv(t)
	endpoint := serveListener(t, e.conn)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + testToken + "x", "Basic " + testToken, testToken} {
		for _, method := range []string{http.MethodPost, http.MethodGet, http.MethodDelete} {
			h := map[string]string{"Authorization": auth, "Mcp-Session-Id": "s1"}
			for k, v := range mcpHeaders {
				h[k] = v
			}
			req, _ := http.NewRequest(method, endpoint, strings.NewReader(initializeBody))
			for k, v := range h {
				if v != "" {
					req.Header.Set(k, v)
				}
			}
			tr := &http.Transport{}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			tr.CloseIdleConnections()
			var msg struct {
				ID    json.RawMessage `json:"id"`
				Error struct {
					Code int `json:"code"`
					Data struct {
						Reason string `json:"reason"`
					} `json:"data"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &msg); err != nil || resp.StatusCode != http.StatusUnauthorized ||
				msg.Error.Code != connector.CodeLocalRefused || msg.Error.Data.Reason != string(reason.LocalAuth) ||
				resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("%s with Authorization %q: %d %s %v", method, auth, resp.StatusCode, body, resp.Header)
			}
		}
	}
	if n := e.up.requestCount(); n != 0 {
		t.Fatalf("%d refused requests reached the gateway", n)
	}
	if status, body := rawRequest(t, endpoint, http.MethodPost, "", mcpHeaders, initializeBody); status != http.StatusOK {
		t.Fatalf("with the token: %d %s", status, body)
	}
	e.up.closeSessions()
}

// TestListenerServesAUnixSocket: an MCP client reaches the connector over a
// private Unix socket, which needs no token and takes any Host.
func TestListenerServesAUnixSocket(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix socket endpoints are Unix only")
	}
	e := newEnv(t)
	// Socket paths are short (108 bytes): a temporary directory of its own.
	dir, err := os.MkdirTemp("", "am")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "c.sock")
	ln, err := connector.Listen(loopback.UnixPrefix + sock)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, e.conn, ln, loopback.Auth{})
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	ctx := testContext(t)
	cs, err := newClient(nil).Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: "http://agentmesh/mcp", HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1,
	}, nil)
	if err != nil {
		t.Fatalf("connect over the unix socket: %v", err)
	}
	defer cs.Close()
	if got, err := callEcho(ctx, cs, "over a socket"); err != nil || got != "over a socket" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

func TestNewRefusesUnsafeConfig(t *testing.T) {
	ca := newEnv(t).ca
	good := ca.ClientTLS(t, "spiffe://test.mesh/agent/a")
	resolve := func(context.Context) (string, error) { return "https://127.0.0.1:1", nil }
	noCert := good.Clone()
	noCert.Certificates, noCert.GetClientCertificate = nil, nil
	insecure := good.Clone()
	insecure.InsecureSkipVerify = true
	insecure.VerifyConnection, insecure.VerifyPeerCertificate = nil, nil
	tests := []struct {
		name string
		cfg  connector.Config
	}{
		{"no resolve", connector.Config{TLS: good}},
		{"no TLS", connector.Config{Resolve: resolve}},
		{"no client certificate", connector.Config{Resolve: resolve, TLS: noCert}},
		{"verification skipped", connector.Config{Resolve: resolve, TLS: insecure}},
		{"dialer and TLS", connector.Config{Resolve: resolve, TLS: good, Dial: (&net.Dialer{}).DialContext}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := connector.New(tt.cfg); !errors.Is(err, connector.ErrConfig) {
				t.Errorf("New = %v, want ErrConfig", err)
			}
		})
	}
}

func TestConnectorRefusesPlainHTTPGateway(t *testing.T) {
	e := newEnv(t)
	c, err := connector.New(connector.Config{
		Resolve: func(context.Context) (string, error) {
			return "http://" + strings.TrimPrefix(e.gw.URL(), "https://"), nil
		},
		TLS: e.ca.ClientTLS(t, "spiffe://test.mesh/agent/a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if line := stdioAnswer(t, c, initializeBody); !strings.Contains(line, fmt.Sprint(connector.CodeGatewayUnreachable)) {
		t.Errorf("answer = %s, want a CodeGatewayUnreachable error", line)
	}
	if n := len(e.up.recordedRequests("POST initialize")); n != 0 {
		t.Errorf("gateway saw %d requests over plain HTTP", n)
	}
}

// stdioAnswer serves c over stdio for one message from the agent, msg,
// and returns the first line c answers with, once c has stopped.
func stdioAnswer(t *testing.T, c *connector.Connector, msg string) string {
	t.Helper()
	agentR, agentW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- c.ServeStdio(testContext(t), agentR, outW); outW.Close() }()
	fmt.Fprintln(agentW, msg)
	line, _ := readLine(outR)
	agentW.Close()
	go io.Copy(io.Discard, outR)
	if err := <-done; err != nil {
		t.Errorf("ServeStdio: %v", err)
	}
	return line
}

func readLine(r io.Reader) (string, error) {
	var b []byte
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if buf[0] == '\n' {
				return string(b), nil
			}
			b = append(b, buf[0])
		}
		if err != nil {
			return string(b), err
		}
	}
}
