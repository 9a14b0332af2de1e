package connector_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

// benchHandler serves the upstream's MCP server without recording: the
// stateless handler for 2026-07-28 and later, sessions before.
func benchHandler(u *upstream) http.Handler {
	stateful := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return u.server }, nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(mcpwire.HeaderProtocolVersion) >= mcpwire.VersionStateless {
			u.stateless.ServeHTTP(w, r)
			return
		}
		stateful.ServeHTTP(w, r)
	})
}

// BenchmarkToolCallViaConnector measures one tools/call round trip from an
// SDK client: straight to a plain-HTTP SDK server ("direct"), and through
// the connector (HTTP or stdio mode) to the same server behind mTLS 1.3.
// The connector's cost is the difference between the sub-benchmarks.
func BenchmarkToolCallViaConnector(b *testing.B) {
	for _, version := range []string{"2025-11-25", "2026-07-28"} {
		up := newUpstream(b)
		h := benchHandler(up)
		plain := httptest.NewServer(h)
		b.Cleanup(plain.Close)
		ca := connectortest.NewCA(b)
		gw := connectortest.StartGateway(b, ca, h)
		c, err := connector.New(connector.Config{Resolve: gw.Resolve, TLS: ca.ClientTLS(b, "spiffe://test.mesh/agent/bench")})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		listenURL := serveListener(b, c)

		run := func(b *testing.B, cs *mcp.ClientSession) {
			ctx := context.Background()
			if _, err := callEcho(ctx, cs, "warm"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := callEcho(ctx, cs, "x"); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run(version+"/direct", func(b *testing.B) {
			run(b, connectHTTP(b, context.Background(), plain.URL, newClient(nil), version))
		})
		b.Run(version+"/connector-http", func(b *testing.B) {
			run(b, connectHTTP(b, context.Background(), listenURL, newClient(nil), version))
		})
		b.Run(version+"/connector-stdio", func(b *testing.B) {
			cs, _ := connectStdio(b, context.Background(), c, newClient(nil), version)
			run(b, cs)
		})
	}
}

// BenchmarkForwardingHop measures the connector's own cost: one small
// JSON-RPC POST answered by a fixed JSON handler, directly over plain HTTP
// versus through the connector's HTTP mode and its mTLS hop. Unlike
// BenchmarkToolCallViaConnector it leaves out the SDK's per-call work.
func BenchmarkForwardingHop(b *testing.B) {
	fixed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"x"}]}}`)
	})
	plain := httptest.NewServer(fixed)
	b.Cleanup(plain.Close)
	ca := connectortest.NewCA(b)
	gw := connectortest.StartGateway(b, ca, fixed)
	c, err := connector.New(connector.Config{Resolve: gw.Resolve, TLS: ca.ClientTLS(b, "spiffe://test.mesh/agent/bench")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	listenURL := serveListener(b, c)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`

	run := func(b *testing.B, url string) {
		tr := &http.Transport{MaxIdleConnsPerHost: 4}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, plain.URL+"/mcp") })
	b.Run("connector-http", func(b *testing.B) { run(b, listenURL) })
}
