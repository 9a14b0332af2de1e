package modelgw

import (
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/tracing"
)

// TestModelRequestIsOneTraceFromTheLocalEndpointToTheUpstream: the local
// endpoint continues the client's traceparent in a client span, the model
// gateway's server span is its child with the decision, model, policy
// version and audit event id, and the upstream gets the upstream hop's
// context; no span carries the prompt.
func TestModelRequestIsOneTraceFromTheLocalEndpointToTheUpstream(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	t.Cleanup(func() { tp.Shutdown(t.Context()) })
	f := newFixture(t, fixtureOpts{tracer: tp})
	const agentTrace, agentSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, err := http.NewRequest("POST", f.local(f.fraud)+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o","messages":[{"role":"user","content":"s3cr3t prompt"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+agentTrace+"-"+agentSpan+"-01")
	resp, err := localClient(t, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The client may have its answer before the handlers that relayed it
	// have returned and ended their spans.
	deadline := time.Now().Add(10 * time.Second)
	for len(sr.Ended()) < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	var client, server, upstream sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch {
		case s.Name() == "agentmesh.upstream":
			upstream = s
		case s.SpanKind() == trace.SpanKindClient:
			client = s
		case s.SpanKind() == trace.SpanKindServer:
			server = s
		}
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), "s3cr3t") {
				t.Errorf("span %s records the prompt in %s", s.Name(), a.Key)
			}
		}
	}
	if client == nil || server == nil || upstream == nil {
		t.Fatalf("spans: local %v, gateway %v, upstream %v", client, server, upstream)
	}
	if client.Parent().TraceID().String() != agentTrace || client.Parent().SpanID().String() != agentSpan {
		t.Errorf("local endpoint span's parent %v, want the client's", client.Parent())
	}
	if server.Parent().SpanID() != client.SpanContext().SpanID() || upstream.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("parents: gateway %v (local %v), upstream %v (gateway %v)",
			server.Parent().SpanID(), client.SpanContext().SpanID(), upstream.Parent().SpanID(), server.SpanContext().SpanID())
	}
	evs := f.rec.Events()
	if len(evs) == 0 {
		t.Fatal("no audit event")
	}
	ev := evs[len(evs)-1]
	attrs := map[string]string{}
	for _, a := range server.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for k, want := range map[string]string{
		tracing.AttrDecision: "allow", tracing.AttrReason: string(ev.Reason), tracing.AttrPolicyVersion: ev.PolicyVersion,
		tracing.AttrAuditEventID: ev.ID, tracing.AttrPeer: ev.Src, attrModel: "gpt-4o",
	} {
		if attrs[k] != want || want == "" {
			t.Errorf("gateway span %s = %q, want %q", k, attrs[k], want)
		}
	}
	got := f.up.Received()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests", len(got))
	}
	want := "00-" + agentTrace + "-" + upstream.SpanContext().SpanID().String() + "-01"
	if h := got[0].Header.Get("Traceparent"); h != want {
		t.Errorf("upstream traceparent %q, want %q", h, want)
	}
}
