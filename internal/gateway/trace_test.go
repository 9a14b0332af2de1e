package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// seenUpstream is an HTTP MCP upstream that answers every request with an
// empty tool result and remembers what it received.
type seenUpstream struct {
	mu     sync.Mutex
	header http.Header
	body   []byte
}

func (u *seenUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.header, u.body = r.Header.Clone(), b
	u.mu.Unlock()
	var m struct {
		ID     json.RawMessage
		Method string
	}
	_ = json.Unmarshal(b, &m)
	if m.Method == "initialize" {
		w.Header().Set("Mcp-Session-Id", "session-1")
	}
	if len(m.ID) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{"content":[]}}`)
}

func (u *seenUpstream) last() (http.Header, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.header, u.body
}

// traced is a gateway fixture whose spans go to an in-memory recorder.
func traced(t *testing.T) (*fixture, *seenUpstream, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(testContext(t)) })
	up := &seenUpstream{}
	f := newFixture(t, fixtureOpts{upstream: up, config: func(c *Config) { c.TracerProvider = tp }})
	return f, up, sr
}

const (
	agentTrace   = "4bf92f3577b34da6a3ce929d0e0e4736"
	agentParent  = "00f067aa0ba902b7"
	headerTrace  = "0af7651916cd43dd8448eb211c80319c"
	headerParent = "b7ad6b7169203331"
	secretArg    = "s3cr3t-argument-value"
)

// spansOf returns the recorded spans by name (the last of each name),
// failing unless each of names is there, or if any records an argument
// value.
func spansOf(t *testing.T, sr *tracetest.SpanRecorder, names ...string) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	got := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range sr.Ended() {
		got[s.Name()] = s
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), secretArg) {
				t.Errorf("span %q records an argument value in %s", s.Name(), a.Key)
			}
		}
	}
	for _, n := range names {
		if got[n] == nil {
			t.Fatalf("no span %q among %d", n, len(got))
		}
	}
	return got
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

func metaOf(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m struct {
		Params struct {
			Meta map[string]any `json:"_meta"`
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("upstream body %s: %v", body, err)
	}
	return m.Params.Meta
}

// TestGatewayTraceContinuesTheCallersTraceToTheUpstream: on MCP
// 2026-07-28 the trace context in params._meta is the parent of the server
// span (it wins over the headers'), the decision and the upstream hop are
// its children, and the upstream gets the upstream span's context in its
// headers and in _meta; the spans carry the decision, reason, policy
// version, audit event id and peer, never an argument value.
func TestGatewayTraceContinuesTheCallersTraceToTheUpstream(t *testing.T) {
	f, up, sr := traced(t)
	ctx := testContext(t)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + secretArg + `"},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","traceparent":"00-` + agentTrace + `-` + agentParent + `-01","tracestate":"vendor=1"}}}`
	status, _, b := f.rawPost(ctx, f.httpClient(f.fraud), body, map[string]string{
		"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo",
		"Traceparent": "00-" + headerTrace + "-" + headerParent + "-01",
	})
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, b)
	}
	spans := spansOf(t, sr, "tools/call echo", "agentmesh.decide", "agentmesh.upstream")
	server, decide, upstream := spans["tools/call echo"], spans["agentmesh.decide"], spans["agentmesh.upstream"]
	if server.SpanKind() != trace.SpanKindServer || server.Parent().TraceID().String() != agentTrace || server.Parent().SpanID().String() != agentParent {
		t.Errorf("server span: kind %v, parent %v; want a server span under the _meta traceparent", server.SpanKind(), server.Parent())
	}
	if got := server.SpanContext().TraceState().String(); got != "vendor=1" {
		t.Errorf("tracestate %q, want the caller's", got)
	}
	for _, s := range []sdktrace.ReadOnlySpan{decide, upstream} {
		if s.Parent().SpanID() != server.SpanContext().SpanID() {
			t.Errorf("%s: parent %v, want the server span", s.Name(), s.Parent().SpanID())
		}
	}
	ev := f.rec.Events()
	if len(ev) == 0 {
		t.Fatal("no audit event")
	}
	last := ev[len(ev)-1]
	for key, want := range map[string]string{
		tracing.AttrDecision: "allow", tracing.AttrReason: string(last.Reason), tracing.AttrPolicyVersion: last.PolicyVersion,
		tracing.AttrAuditEventID: last.ID, tracing.AttrPeer: last.Src, tracing.AttrToolName: "echo",
		tracing.AttrMethod: "tools/call", tracing.AttrOutcome: string(audit.OutcomeOK),
	} {
		if got := attr(server, key); got != want || want == "" {
			t.Errorf("server span %s = %q, want %q", key, got, want)
		}
	}
	if attr(decide, tracing.AttrDecision) != "allow" || attr(decide, tracing.AttrAuditEventID) != last.ID {
		t.Errorf("decide span attributes %v", decide.Attributes())
	}

	h, ub := up.last()
	want := "00-" + agentTrace + "-" + upstream.SpanContext().SpanID().String() + "-01"
	if got := h.Get("Traceparent"); got != want {
		t.Errorf("upstream traceparent header %q, want %q", got, want)
	}
	meta := metaOf(t, ub)
	if meta["traceparent"] != want || meta["tracestate"] != "vendor=1" {
		t.Errorf("upstream _meta %v, want traceparent %s", meta, want)
	}
	if meta["io.modelcontextprotocol/protocolVersion"] != "2026-07-28" || !strings.Contains(string(ub), secretArg) {
		t.Errorf("upstream body lost what the caller sent: %s", ub)
	}
}

// TestGatewayTraceReadsMetaOnlyFrom20260728: before MCP 2026-07-28 the
// headers are the trace context, and _meta passes to the upstream as the
// caller wrote it.
func TestGatewayTraceReadsMetaOnlyFrom20260728(t *testing.T) {
	f, up, sr := traced(t)
	ctx := testContext(t)
	c := f.httpClient(f.fraud)
	sid := f.rawSession(ctx, c, "2025-11-25")
	agentTP := "00-" + agentTrace + "-" + agentParent + "-01"
	body := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"traceparent":"` + agentTP + `"}}}`
	status, _, b := f.rawPost(ctx, c, body, map[string]string{
		"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25",
		"Traceparent": "00-" + headerTrace + "-" + headerParent + "-01",
	})
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, b)
	}
	spans := spansOf(t, sr, "tools/call echo", "agentmesh.upstream")
	if p := spans["tools/call echo"].Parent(); p.TraceID().String() != headerTrace || p.SpanID().String() != headerParent {
		t.Errorf("server span parent %v, want the header's", p)
	}
	h, ub := up.last()
	if got := h.Get("Traceparent"); !strings.HasPrefix(got, "00-"+headerTrace+"-") {
		t.Errorf("upstream traceparent %q, want the header's trace", got)
	}
	if meta := metaOf(t, ub); meta["traceparent"] != agentTP {
		t.Errorf("upstream _meta %v: rewritten before 2026-07-28", meta)
	}
}

// TestGatewayTraceIgnoresHostileTraceContext: a malformed traceparent
// starts a new trace, an oversized tracestate is dropped, and neither
// changes the decision.
func TestGatewayTraceIgnoresHostileTraceContext(t *testing.T) {
	tests := []struct {
		name, traceparent, tracestate, tool string
		wantParent                          bool
		wantDecision                        string
	}{
		{"malformed traceparent", "00-" + strings.Repeat("z", 32) + "-" + headerParent + "-01", "", "echo", false, "allow"},
		{"all-zero trace id", "00-" + strings.Repeat("0", 32) + "-" + headerParent + "-01", "", "echo", false, "allow"},
		{"oversized traceparent", "00-" + headerTrace + "-" + headerParent + "-01-" + strings.Repeat("a", 200), "", "echo", false, "allow"},
		{"oversized tracestate", "00-" + headerTrace + "-" + headerParent + "-01", "k=" + strings.Repeat("v", tracing.MaxTraceStateLen), "echo", true, "allow"},
		{"sampled parent on a denied tool", "00-" + headerTrace + "-" + headerParent + "-01", "", "drop_table", true, "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, up, sr := traced(t)
			ctx := testContext(t)
			body := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"` + tt.tool + `","arguments":{},` +
				`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
			hdr := map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tt.tool, "Traceparent": tt.traceparent}
			if tt.tracestate != "" {
				hdr["Tracestate"] = tt.tracestate
			}
			status, _, b := f.rawPost(ctx, f.httpClient(f.fraud), body, hdr)
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, b)
			}
			server := spansOf(t, sr, "tools/call "+tt.tool)["tools/call "+tt.tool]
			if got := server.Parent().IsValid(); got != tt.wantParent {
				t.Errorf("server span has a parent: %v, want %v", got, tt.wantParent)
			}
			if server.SpanContext().TraceState().Len() != 0 {
				t.Errorf("tracestate kept: %s", server.SpanContext().TraceState())
			}
			if got := attr(server, tracing.AttrDecision); got != tt.wantDecision {
				t.Errorf("decision %q, want %q", got, tt.wantDecision)
			}
			if tt.wantDecision == "allow" {
				if h, _ := up.last(); h.Get("Tracestate") != "" {
					t.Errorf("upstream got tracestate %q", h.Get("Tracestate"))
				}
			}
		})
	}
}
