package connector_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// tracedEnv is newEnv with a connector whose spans go to a recorder.
func tracedEnv(t *testing.T) (*env, *tracetest.SpanRecorder) { return tracedEnvMax(t, 0) }

// tracedEnvMax is tracedEnv with Config.MaxMessageBytes max.
func tracedEnvMax(t *testing.T, max int) (*env, *tracetest.SpanRecorder) {
	e := newEnv(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(testContext(t)) })
	c, err := connector.New(connector.Config{
		Resolve:         e.gw.Resolve,
		TLS:             e.ca.ClientTLS(t, "spiffe://test.mesh/agent/tester"),
		Logger:          testLogger(t),
		TracerProvider:  tp,
		MaxMessageBytes: max,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e.conn = c
	return e, sr
}

// clientSpan returns the last ended span named name, waiting for it: the
// agent may have its answer before the span that relayed it ends.
func clientSpan(t *testing.T, sr *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var found sdktrace.ReadOnlySpan
	for found == nil && time.Now().Before(deadline) {
		for _, s := range sr.Ended() {
			if s.Name() == name {
				found = s
			}
		}
		if found == nil {
			time.Sleep(time.Millisecond)
		}
	}
	for _, s := range sr.Ended() {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), "s3cr3t") {
				t.Errorf("span %s records an argument value in %s", s.Name(), a.Key)
			}
		}
	}
	if found == nil {
		t.Fatalf("no span %q", name)
	}
	if found.SpanKind() != trace.SpanKindClient {
		t.Errorf("span %q is %v, want client", name, found.SpanKind())
	}
	return found
}

func traceparentOf(s sdktrace.ReadOnlySpan) string {
	return "00-" + s.SpanContext().TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"
}

func bodyMeta(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m struct {
		Params struct {
			Meta map[string]any `json:"_meta"`
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return m.Params.Meta
}

// TestConnectorTracePropagatesInHeadersAndMetaOn20260728: over stdio, a
// tools/call is a client span whose context reaches the gateway in the
// traceparent header, and in params._meta on MCP 2026-07-28 only.
func TestConnectorTracePropagatesInHeadersAndMetaOn20260728(t *testing.T) {
	for _, v := range []struct {
		name, version string
		inMeta        bool
	}{{"2026-07-28", "", true}, {"2025-11-25", "2025-11-25", false}} {
		t.Run(v.name, func(t *testing.T) {
			e, sr := tracedEnv(t)
			ctx := testContext(t)
			cs, _ := connectStdio(t, ctx, e.conn, newClient(nil), v.version)
			if _, err := callEcho(ctx, cs, "s3cr3t"); err != nil {
				t.Fatal(err)
			}
			span := clientSpan(t, sr, "tools/call echo")
			if got := span.Parent(); got.IsValid() {
				t.Errorf("span has parent %v; the agent sent none", got)
			}
			calls := e.up.recordedRequests("POST tools/call")
			if len(calls) != 1 {
				t.Fatalf("gateway saw %d tools/call", len(calls))
			}
			want := traceparentOf(span)
			if got := calls[0].header.Get("Traceparent"); got != want {
				t.Errorf("traceparent header %q, want %q", got, want)
			}
			meta := bodyMeta(t, calls[0].body)
			if got, _ := meta["traceparent"].(string); (got == want) != v.inMeta || (!v.inMeta && got != "") {
				t.Errorf("_meta traceparent %q (in _meta: %v)", got, v.inMeta)
			}
			for key, want := range map[string]string{tracing.AttrMethod: "tools/call", tracing.AttrToolName: "echo", tracing.AttrStatusCode: "200"} {
				if got := attrOf(span, key); got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
		})
	}
}

func attrOf(s sdktrace.ReadOnlySpan, key string) string {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// TestConnectorTraceContinuesTheAgentsTrace: on the local endpoint, the
// agent's trace context (params._meta first, then headers) is the parent
// of the connector's span; a malformed one is not.
func TestConnectorTraceContinuesTheAgentsTrace(t *testing.T) {
	const (
		metaTrace   = "4bf92f3577b34da6a3ce929d0e0e4736"
		headerTrace = "0af7651916cd43dd8448eb211c80319c"
	)
	tests := []struct {
		name, header, meta string
		wantTrace          string
	}{
		{"header", "00-" + headerTrace + "-b7ad6b7169203331-01", "", headerTrace},
		{"_meta wins", "00-" + headerTrace + "-b7ad6b7169203331-01", "00-" + metaTrace + "-00f067aa0ba902b7-01", metaTrace},
		{"malformed", "00-" + headerTrace + "-b7ad6b7169203331-zz", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, sr := tracedEnv(t)
			endpoint := serveListener(t, e.conn)
			meta := `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}`
			if tt.meta != "" {
				meta += `,"traceparent":"` + tt.meta + `","tracestate":"agent=1"`
			}
			body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"s3cr3t"},"_meta":{` + meta + `}}}`
			hdr := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
				"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo", "Traceparent": tt.header}
			status, out := rawRequest(t, endpoint, http.MethodPost, "", hdr, body)
			if status != http.StatusOK || !strings.Contains(out, "s3cr3t") {
				t.Fatalf("status %d: %s", status, out)
			}
			span := clientSpan(t, sr, "tools/call echo")
			if got := span.Parent(); tt.wantTrace == "" && got.IsValid() || tt.wantTrace != "" && got.TraceID().String() != tt.wantTrace {
				t.Errorf("parent %v, want trace %q", got, tt.wantTrace)
			}
			calls := e.up.recordedRequests("POST tools/call")
			if len(calls) != 1 {
				t.Fatalf("gateway saw %d tools/call", len(calls))
			}
			want := traceparentOf(span)
			m := bodyMeta(t, calls[0].body)
			if calls[0].header.Get("Traceparent") != want || m["traceparent"] != want {
				t.Errorf("gateway got header %q, _meta %v; want %s", calls[0].header.Get("Traceparent"), m, want)
			}
			if tt.meta != "" && (m["tracestate"] != "agent=1" || calls[0].header.Get("Tracestate") != "agent=1") {
				t.Errorf("tracestate not carried on: _meta %v, header %q", m, calls[0].header.Get("Tracestate"))
			}
		})
	}
}

// TestConnectorTraceForwardsAnOversizedBodyUntouched: with tracing on, the
// local endpoint reads a POST body to trace it; one over MaxMessageBytes is
// forwarded whole and unchanged (the gateway judges it), still traced in
// the headers.
func TestConnectorTraceForwardsAnOversizedBodyUntouched(t *testing.T) {
	e, sr := tracedEnvMax(t, 512)
	endpoint := serveListener(t, e.conn)
	text := strings.Repeat("x", 2048)
	body := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + text + `"},"_meta":{` +
		`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}}}`
	hdr := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
	status, out := rawRequest(t, endpoint, http.MethodPost, "", hdr, body)
	if status != http.StatusOK || !strings.Contains(out, text) {
		t.Fatalf("status %d: %.200s", status, out)
	}
	calls := e.up.recordedRequests("POST tools/call")
	if len(calls) != 1 || string(calls[0].body) != body {
		t.Fatalf("gateway got %d calls, the body changed: %v", len(calls), len(calls) == 1 && string(calls[0].body) != body)
	}
	span := clientSpan(t, sr, "POST")
	if got := calls[0].header.Get("Traceparent"); got != traceparentOf(span) {
		t.Errorf("traceparent %q, want %q", got, traceparentOf(span))
	}
}
