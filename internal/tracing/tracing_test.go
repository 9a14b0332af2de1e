package tracing

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestConfiguredOnlyWhenTheEnvironmentAsks(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		on       bool
		endpoint string
		err      bool
	}{
		{"nothing set", nil, false, "", false},
		{"base endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}, true, "http://127.0.0.1:4318/v1/traces", false},
		{"traces endpoint wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/x"}, true, "http://b:4318/x", false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"}, false, "", false},
		{"SDK disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"}, false, "", false},
		{"exporter otlp", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "otlp"}, true, "http://a:4318/v1/traces", false},
		{"exporter zipkin", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "zipkin"}, false, "", true},
		{"grpc asked for", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false, "", true},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, true, "http://a:4318/v1/traces", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, on, err := Configured(env(tt.env))
			if (err != nil) != tt.err || (err != nil && !errors.Is(err, ErrConfig)) {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if on != tt.on || ep != tt.endpoint {
				t.Errorf("Configured = %q, %v; want %q, %v", ep, on, tt.endpoint, tt.on)
			}
		})
	}
}

func TestProviderOffIsTheZeroTracer(t *testing.T) {
	p, err := FromEnv(context.Background(), Options{Component: "gateway", Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() || p.TracerProvider() != nil || p.Endpoint() != "" || p.Shutdown(context.Background()) != nil {
		t.Fatalf("an unconfigured provider is on")
	}
	tr := NewTracer(p.TracerProvider(), "gateway")
	if tr.On() {
		t.Fatal("zero tracer is on")
	}
	// A span already in the context is never the off tracer's to end.
	sr := tracetest.NewSpanRecorder()
	outer, s := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr)).Tracer("t").Start(context.Background(), "outer")
	ctx, span := tr.Start(outer, "x", trace.SpanKindServer)
	span.End()
	if ctx != outer || len(sr.Ended()) != 0 || span.SpanContext().IsValid() {
		t.Fatal("the off tracer touched the caller's span")
	}
	s.End()
	if n := testing.AllocsPerRun(100, func() { _, sp := tr.Start(ctx, "x", trace.SpanKindClient); sp.End() }); n != 0 {
		t.Errorf("off tracer allocates %v times a span", n)
	}
}

func TestProviderRedactsTheEndpointItNames(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://user:secret@collector.example:4318/v1/traces?token=secret")
	p, err := FromEnv(context.Background(), Options{Component: "connector"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	if ep := p.Endpoint(); strings.Contains(ep, "secret") || ep != "https://collector.example:4318/v1/traces" {
		t.Errorf("endpoint %q", ep)
	}
}

const (
	validTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
)

func TestExtractIsStrictAndBounded(t *testing.T) {
	tests := []struct {
		name, tp, ts string
		ok           bool
		wantTS       string
	}{
		{"valid", validTP, "a=1,b=2", true, "a=1,b=2"},
		{"empty", "", "a=1", false, ""},
		{"upper-case hex", strings.ToUpper(validTP), "", false, ""},
		{"short", "00-4bf92f3577b34da6-00f067aa0ba902b7-01", "", false, ""},
		{"zero span id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "", false, ""},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", false, ""},
		{"oversized traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + strings.Repeat("x", MaxTraceParentLen), "", false, ""},
		{"oversized tracestate dropped", validTP, "a=" + strings.Repeat("b", MaxTraceStateLen), true, ""},
		{"invalid tracestate dropped", validTP, "not a list member", true, ""},
		{"33 tracestate members dropped", validTP, strings.Repeat("k=v,", 32) + "z=1", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Traceparent", tt.tp)
			h.Set("Tracestate", tt.ts)
			ctx, ok := Extract(context.Background(), h)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			sc := trace.SpanContextFromContext(ctx)
			if !ok {
				if sc.IsValid() {
					t.Fatal("invalid trace context left a span context")
				}
				return
			}
			if !sc.IsRemote() || sc.TraceID().String() != traceID || sc.TraceState().String() != tt.wantTS {
				t.Errorf("span context %v, tracestate %q", sc, sc.TraceState())
			}
		})
	}
}

// spanCtx returns a context with a recorded span, and the traceparent it
// propagates.
func spanCtx(t *testing.T) (context.Context, string) {
	sr := tracetest.NewSpanRecorder()
	ctx, _ := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr)).Tracer("t").Start(context.Background(), "s")
	h := http.Header{}
	Inject(ctx, h)
	if h.Get("Traceparent") == "" {
		t.Fatal("Inject set no traceparent")
	}
	return ctx, h.Get("Traceparent")
}

func TestInjectMetaSetsTraceContextAndKeepsTheRest(t *testing.T) {
	ctx, tp := spanCtx(t)
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"no params", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, true},
		{"no _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","arguments":{"html":"<b>&</b>","n":1.50}}}`, true},
		{"replaces the sender's", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"e","_meta":{"traceparent":"x","TraceState":"y","k":"v"}}}`, true},
		{"response", `{"jsonrpc":"2.0","id":1,"result":{}}`, false},
		{"params an array", `{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}`, false},
		{"_meta a string", `{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":"x"}}`, false},
		{"not JSON", `{"jsonrpc":`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := InjectMeta(ctx, []byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v (%s)", ok, tt.ok, out)
			}
			if !ok {
				if string(out) != tt.in {
					t.Errorf("message changed: %s", out)
				}
				return
			}
			var got, want map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			json.Unmarshal([]byte(tt.in), &want)
			params, _ := got["params"].(map[string]any)
			meta, _ := params["_meta"].(map[string]any)
			if meta["traceparent"] != tp || meta["TraceState"] != nil {
				t.Errorf("_meta %v, want traceparent %s alone under its name", meta, tp)
			}
			delete(meta, "traceparent")
			if wp, _ := want["params"].(map[string]any); wp != nil {
				if wm, _ := wp["_meta"].(map[string]any); wm != nil {
					delete(wm, "traceparent")
					delete(wm, "TraceState")
					if len(wm) == 0 {
						delete(wp, "_meta")
					}
				}
			}
			if len(meta) == 0 {
				delete(params, "_meta")
			}
			if len(params) == 0 {
				delete(got, "params")
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if string(g) != string(w) {
				t.Errorf("rest changed:\n got %s\nwant %s", g, w)
			}
			if strings.Contains(tt.in, "<b>&</b>") && !strings.Contains(string(out), "<b>&</b>") {
				t.Errorf("strings re-escaped: %s", out)
			}
		})
	}
	if out, ok := InjectMeta(context.Background(), []byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)); ok || string(out) != `{"jsonrpc":"2.0","id":1,"method":"ping"}` {
		t.Errorf("without a span: %s, %v", out, ok)
	}
}

// TestProviderExportsOverOTLPHTTPAndFlushesAtShutdown: with the endpoint
// in the environment, spans reach an OTLP/HTTP receiver, with the
// resource's service name, by the flush of Shutdown (the batch delay is an
// hour).
func TestProviderExportsOverOTLPHTTPAndFlushesAtShutdown(t *testing.T) {
	got := make(chan *coltracepb.ExportTraceServiceRequest, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ex coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &ex) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		got <- &ex
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
	t.Setenv("OTEL_SERVICE_NAME", "")
	p, err := FromEnv(context.Background(), Options{Component: "gateway", Node: "spiffe://test/tool/x"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled() || p.Endpoint() != srv.URL+"/v1/traces" {
		t.Fatalf("enabled %v, endpoint %q", p.Enabled(), p.Endpoint())
	}
	_, s := NewTracer(p.TracerProvider(), "gateway").Start(context.Background(), "tools/call echo", trace.SpanKindServer)
	s.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-got:
		rs := ex.ResourceSpans[0]
		attrs := map[string]string{}
		for _, a := range rs.Resource.Attributes {
			attrs[a.Key] = a.Value.GetStringValue()
		}
		if attrs["service.name"] != "agentmesh-gateway" || attrs["agentmesh.node"] != "spiffe://test/tool/x" {
			t.Errorf("resource %v", attrs)
		}
		if n := rs.ScopeSpans[0].Spans[0].Name; n != "tools/call echo" {
			t.Errorf("span %q", n)
		}
	default:
		t.Fatal("Shutdown returned before the span was exported")
	}
}
