package e2e

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// aggregateSubscribePolicy lets agent:bot use the Go SDK's conformance
// server's tools and its static text resource, not its static binary one.
const aggregateSubscribePolicy = `{
  "grants": [
    {"src": ["agent:bot"], "dst": ["tool:conformance"], "tools": ["*"], "resources": ["test://static-text"]},
  ],
}`

// TestAggregatedEndpointPassesOnAGatewaysRefusedSubscription: the Go
// SDK's conformance server (which, unlike the TypeScript servers, speaks
// MCP 2026-07-28) behind a gateway that refuses one of its resources,
// 'agentmesh connect --all' in front over HTTP: a subscription to it fails
// with the gateway's denial (-32040), for a client of MCP 2025-11-25
// (resources/subscribe) and a 2026-07-28 one (subscriptions/listen),
// while one to a granted resource is made. The aggregator's own session
// to the gateway speaks 2026-07-28, over which the SDK's client does not
// report a refused subscription.
func TestAggregatedEndpointPassesOnAGatewaysRefusedSubscription(t *testing.T) {
	m := newMesh(t)
	serverURL := startConformanceServerWith(t, true) // 2026-07-28 to the gateway
	svc := m.join("tool", "conformance", "")
	agent := m.join("agent", "bot", "")
	m.applyPolicy(aggregateSubscribePolicy)
	m.serveURL("conformance", svc, serverURL)

	p := startServer(t, "connect --all", []string{agentmeshBin, "connect", "--all", "--state", agent, "--listen", "127.0.0.1:0"}, m.env())
	s, err := p.waitServing(startTimeout)
	if err != nil {
		t.Fatalf("connect --all did not start serving: %v", err)
	}
	token := localToken(t, s.TokenFile, agent)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: bearer{tr, token}}
	const (
		granted = "agentmesh://conformance/test://static-text"
		refused = "agentmesh://conformance/test://static-binary"
	)

	cl := mcp.NewClient(&mcp.Implementation{Name: "bot", Version: "e2e"}, nil)
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL, MaxRetries: -1, HTTPClient: hc}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	err = cs.Subscribe(ctx, &mcp.SubscribeParams{URI: refused})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -32040 {
		t.Errorf("2025-11-25: a subscription the gateway refuses: %v, want its -32040", err)
	}
	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: granted}); err != nil {
		t.Errorf("2025-11-25: a granted subscription: %v", err)
	}

	// listen returns the first message of a 2026-07-28 listen for uri.
	listen := func(uri string) string {
		t.Helper()
		lctx, stop := context.WithCancel(ctx)
		defer stop()
		body := `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["` + uri + `"]},` +
			`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bot","version":"e2e"},"io.modelcontextprotocol/clientCapabilities":{}}}}`
		req, err := http.NewRequestWithContext(lctx, http.MethodPost, s.URL, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "subscriptions/listen")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				return strings.TrimSpace(data)
			}
			if strings.HasPrefix(sc.Text(), "{") {
				return sc.Text()
			}
		}
		t.Fatalf("2026-07-28: the listen for %s ended without a message (%d): %v", uri, resp.StatusCode, sc.Err())
		return ""
	}
	if got := listen(refused); !strings.Contains(got, `"id":7`) || !strings.Contains(got, `"code":-32040`) {
		t.Errorf("2026-07-28: a listen the gateway refuses answered %s, want its -32040", got)
	}
	if got := listen(granted); !strings.Contains(got, "notifications/subscriptions/acknowledged") {
		t.Errorf("2026-07-28: a granted listen began with %s, want its acknowledgement", got)
	}
}
