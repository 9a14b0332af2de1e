//go:build unix

package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver on loopback: it decodes
// every ExportTraceServiceRequest and keeps the spans with the service
// name of their resource.
type otlpReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	spans   []otlpSpan
	changed chan struct{} // closed and replaced when spans arrive
}

type otlpSpan struct {
	service string
	*tracepb.Span
}

func (s otlpSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.GetStringValue()
		}
	}
	return ""
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want a POST of application/x-protobuf to /v1/traces", http.StatusBadRequest)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var ex coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &ex); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range ex.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, otlpSpan{service: service, Span: s})
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// waitSpan waits until a span of service named name (and in trace, when
// trace is set) has arrived and returns the last such span.
func (r *otlpReceiver) waitSpan(t *testing.T, service, name string, trace []byte, timeout time.Duration) otlpSpan {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		var found *otlpSpan
		for i := range r.spans {
			if s := r.spans[i]; s.service == service && s.Name == name && (trace == nil || bytes.Equal(s.TraceId, trace)) {
				found = &s
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if found != nil {
			return *found
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no span %q from %s within %v", name, service, timeout)
		}
	}
}

func (r *otlpReceiver) all() []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]otlpSpan(nil), r.spans...)
}

func (r *otlpReceiver) env(m *mesh, scheduleDelay string) []string {
	return append(m.env(), "OTEL_EXPORTER_OTLP_ENDPOINT="+r.srv.URL, "OTEL_BSP_SCHEDULE_DELAY="+scheduleDelay,
		"OTEL_TRACES_EXPORTER=", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", "OTEL_EXPORTER_OTLP_PROTOCOL=", "OTEL_SERVICE_NAME=")
}

// TestTraceFollowsAToolCallAcrossTheMesh runs the real binary: a connector
// and a gateway in processes of their own, both exporting to an in-process
// OTLP/HTTP receiver. One tools/call is one trace: the gateway's server
// span is the child of the connector's client span, the decision and the
// upstream hop are children of the server span, the server span carries
// the decision, reason, policy version and the id of the audit event the
// coordinator stores, and no span carries the call's argument. The
// gateway exports on a short batch delay (spans arrive while it runs);
// the connector's delay is an hour, so its span arrives only through the
// flush at shutdown.
func TestTraceFollowsAToolCallAcrossTheMesh(t *testing.T) {
	m := newMesh(t)
	rcv := newOTLPReceiver(t)
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(everythingPolicy)

	upstream := []string{"node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio"}
	gw := startServer(t, "gateway everything", append([]string{agentmeshBin, "serve", "--state", tool, "--listen", "127.0.0.1:0", "--"}, upstream...), rcv.env(m, "50"))
	if _, err := gw.waitServing(startTimeout); err != nil {
		t.Fatalf("gateway did not start serving: %v", err)
	}
	cn := startServer(t, "connect everything", []string{agentmeshBin, "connect", "everything", "--state", agent, "--listen", "127.0.0.1:0"}, rcv.env(m, "3600000"))
	cs, err := cn.waitServing(startTimeout)
	if err != nil {
		t.Fatalf("connector did not start serving: %v", err)
	}
	if _, err := gw.waitLine(gw.stdout, startTimeout, func(l string) bool {
		return l == "gateway: traces: exporting to "+rcv.srv.URL+"/v1/traces"
	}); err != nil {
		t.Errorf("the gateway did not say where its traces go (%v): %s", err, gw.stdout)
	}

	const secret = "trace-e2e-argument-s3cr3t"
	out := runClient(t, httpClient(cs.URL, localToken(t, cs.TokenFile, agent),
		step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": secret}}))
	if got := texts(t, out.Results[0]); !strings.Contains(got, secret) {
		t.Fatalf("echo returned %q", got)
	}

	// The client's session has other requests (initialize, a GET stream):
	// the call's spans are those of the call's trace.
	server := rcv.waitSpan(t, "agentmesh-gateway", "tools/call echo", nil, startTimeout)
	decide := rcv.waitSpan(t, "agentmesh-gateway", "agentmesh.decide", server.TraceId, startTimeout)
	up := rcv.waitSpan(t, "agentmesh-gateway", "agentmesh.upstream", server.TraceId, startTimeout)
	for _, s := range rcv.all() {
		if s.service == "agentmesh-connector" {
			t.Fatalf("the connector exported %q before its batch delay or shutdown", s.Name)
		}
	}
	cn.stop(t) // the connector's span leaves with the flush at shutdown
	client := rcv.waitSpan(t, "agentmesh-connector", "tools/call echo", nil, startTimeout)

	id := func(b []byte) string { return hex.EncodeToString(b) }
	if client.Kind != tracepb.Span_SPAN_KIND_CLIENT || server.Kind != tracepb.Span_SPAN_KIND_SERVER || up.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("span kinds: connector %v, gateway %v, upstream %v", client.Kind, server.Kind, up.Kind)
	}
	for _, s := range []otlpSpan{server, decide, up} {
		if !bytes.Equal(s.TraceId, client.TraceId) {
			t.Errorf("%s %q is in trace %s, the connector's span in %s", s.service, s.Name, id(s.TraceId), id(client.TraceId))
		}
	}
	if !bytes.Equal(server.ParentSpanId, client.SpanId) {
		t.Errorf("gateway span's parent %s, want the connector's span %s", id(server.ParentSpanId), id(client.SpanId))
	}
	for _, s := range []otlpSpan{decide, up} {
		if !bytes.Equal(s.ParentSpanId, server.SpanId) {
			t.Errorf("%q's parent %s, want the gateway's server span %s", s.Name, id(s.ParentSpanId), id(server.SpanId))
		}
	}

	eventID := server.attr("agentmesh.audit.event_id")
	events := m.waitAudit(eventID)
	ev := findEvent(t, events, eventID)
	if ev.Tool != "echo" || ev.Decision != "allow" {
		t.Errorf("the span's audit event is %+v", ev)
	}
	for key, want := range map[string]string{
		"agentmesh.decision": "allow", "agentmesh.reason": ev.Reason, "mcp.method.name": "tools/call",
		"gen_ai.tool.name": "echo", "agentmesh.peer.id": "spiffe://agentmesh.local/agent/assistant",
	} {
		if got := server.attr(key); got != want || want == "" {
			t.Errorf("gateway span %s = %q, want %q", key, got, want)
		}
	}
	if server.attr("agentmesh.policy.version") == "" || decide.attr("agentmesh.policy.version") != server.attr("agentmesh.policy.version") {
		t.Errorf("policy version %q on the server span, %q on the decision", server.attr("agentmesh.policy.version"), decide.attr("agentmesh.policy.version"))
	}
	if client.attr("gen_ai.tool.name") != "echo" {
		t.Errorf("connector span attributes %v", client.Attributes)
	}
	for _, s := range rcv.all() {
		b, _ := proto.Marshal(s.Span)
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s span %q carries the call's argument", s.service, s.Name)
		}
	}
}
