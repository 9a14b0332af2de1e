package aggregate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// refusingUpstream lists file:///x.txt and file:///secret.txt and, as a
// gateway whose policy does not grant the second, refuses its
// subscription with the gateway's denial (-32040, data.reason); the
// subscriptions it grants go to subs.
func refusingUpstream(subs chan string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "gw", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler: func(_ context.Context, r *mcp.SubscribeRequest) error {
			if r.Params.URI == "file:///secret.txt" {
				return &jsonrpc.Error{Code: -32040, Message: "denied by policy: not granted", Data: json.RawMessage(`{"reason":"not_granted"}`)}
			}
			subs <- "+" + r.Params.URI
			return nil
		},
		UnsubscribeHandler: func(_ context.Context, r *mcp.UnsubscribeRequest) error { subs <- "-" + r.Params.URI; return nil },
	})
	s.AddTool(&mcp.Tool{Name: "t", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	for _, uri := range []string{"file:///x.txt", "file:///secret.txt"} {
		s.AddResource(&mcp.Resource{URI: uri, Name: uri}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: "x"}}}, nil
		})
	}
	return s
}

// postListen POSTs body, a 2026-07-28 subscriptions/listen, to the HTTP
// endpoint e, with the headers a 2026-07-28 client sends.
func postListen(t *testing.T, ctx context.Context, e *httpEndpoint, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", protocol2026)
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	resp, err := (&http.Client{Transport: e.tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// listen sends a 2026-07-28 subscriptions/listen for uri to the HTTP
// endpoint e and returns its first message: the refusal, or the
// acknowledgement of a listen that stays open (closed on return).
func listen(t *testing.T, e *httpEndpoint, uri string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["` + uri + `"]},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`
	resp := postListen(t, ctx, e, body)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			return strings.TrimSpace(data)
		}
		if strings.HasPrefix(line, "{") { // application/json
			return line
		}
	}
	t.Fatalf("the listen ended without a message: %v", sc.Err())
	return ""
}

// TestARefusedSubscriptionFailsWithTheGatewaysReason: a subscription the
// gateway refuses fails for the client with the gateway's code and
// reason, and one it grants is made, for clients before 2026-07-28
// (resources/subscribe on a session of their own) and 2026-07-28 ones
// (subscriptions/listen over the aggregator's shared session, which
// speaks 2026-07-28 to the gateway: the SDK's client there sends the
// service a listen and never reads its answer, so the aggregator
// subscribes over a 2025-11-25 session instead).
func TestARefusedSubscriptionFailsWithTheGatewaysReason(t *testing.T) {
	t.Run(protocol2025, func(t *testing.T) {
		subs := make(chan string, 8)
		_, cs, changed := newFixtureWith(t, map[string]*mcp.Server{"gw": refusingUpstream(subs)}, fixtureOptions{version: protocol2025,
			services: []Service{{Name: "gw", Addr: "1"}}})
		waitList(t, changed, resourceURIs(cs), "agentmesh://gw/file:///secret.txt", "agentmesh://gw/file:///x.txt")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "agentmesh://gw/file:///secret.txt"})
		var je *jsonrpc.Error
		if !errors.As(err, &je) || je.Code != -32040 || !strings.Contains(string(je.Data), "not_granted") {
			t.Errorf("a refused subscription: %v, want the gateway's -32040 not_granted", err)
		}
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "agentmesh://gw/file:///x.txt"}); err != nil {
			t.Errorf("a granted subscription: %v", err)
		}
		if got := <-subs; got != "+file:///x.txt" {
			t.Errorf("the service got %q", got)
		}
	})
	t.Run(protocol2026, func(t *testing.T) {
		subs := make(chan string, 8)
		a, cs, changed := newFixtureWith(t, map[string]*mcp.Server{"gw": refusingUpstream(subs)}, fixtureOptions{
			services: []Service{{Name: "gw", Addr: "1"}}})
		waitList(t, changed, resourceURIs(cs), "agentmesh://gw/file:///secret.txt", "agentmesh://gw/file:///x.txt")
		e := serveHTTP(t, a)
		got := listen(t, e, "agentmesh://gw/file:///secret.txt")
		if !strings.Contains(got, `"id":7`) || !strings.Contains(got, `"code":-32040`) || !strings.Contains(got, "not_granted") {
			t.Errorf("a refused listen answered %s, want the gateway's -32040 not_granted", got)
		}
		if got := listen(t, e, "agentmesh://gw/file:///x.txt"); !strings.Contains(got, "notifications/subscriptions/acknowledged") {
			t.Errorf("a granted listen began with %s, want its acknowledgement", got)
		}
		if got := <-subs; got != "+file:///x.txt" {
			t.Errorf("the service got %q", got)
		}
	})
}
