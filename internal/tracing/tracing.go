package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ErrConfig: the OpenTelemetry environment asks for something agentmesh
// does not do (an exporter other than OTLP, OTLP over gRPC or JSON).
var ErrConfig = errors.New("tracing configuration")

// Span attribute keys. MCP ones follow OpenTelemetry's MCP semantic
// conventions; the rest are agentmesh's own. Nothing else is recorded.
const (
	AttrMethod          = "mcp.method.name"           // JSON-RPC method, or the HTTP method of a GET stream or DELETE
	AttrToolName        = "gen_ai.tool.name"          // tools/call: the tool's name
	AttrProtocolVersion = "mcp.protocol.version"      // Mcp-Protocol-Version, when sent
	AttrDecision        = "agentmesh.decision"        // allow or deny
	AttrReason          = "agentmesh.reason"          // the stable reason code (internal/reason)
	AttrPolicyVersion   = "agentmesh.policy.version"  // the policy version that decided
	AttrRule            = "agentmesh.policy.rule"     // the grant that allowed, if any
	AttrAuditEventID    = "agentmesh.audit.event_id"  // the audit event of the request
	AttrPeer            = "agentmesh.peer.id"         // the caller's SPIFFE ID (gateway)
	AttrOutcome         = "agentmesh.outcome"         // the audit outcome (forwarded, denied, upstream_error, ...)
	AttrService         = "agentmesh.service"         // what a connector reaches (tool:NAME, NAME)
	AttrStatusCode      = "http.response.status_code" // the HTTP status of the hop
)

// Options says who a provider traces for.
type Options struct {
	// Component is "gateway" or "connector": the default service.name is
	// "agentmesh-" + Component (OTEL_SERVICE_NAME overrides it), and the
	// resource attribute agentmesh.component says it either way.
	Component string
	// Node is the node's SPIFFE ID, a resource attribute when set.
	Node string
	// Getenv reads the environment to decide whether to export; nil is
	// os.Getenv. (The exporter and the SDK read the process environment
	// themselves for the rest: endpoint, headers, sampler, batching.)
	Getenv func(string) string
}

// Provider is one component's tracing. The nil *Provider and the one
// returned when export is off hand out the zero Tracer and shut down
// nothing.
type Provider struct {
	sdk      *sdktrace.TracerProvider
	endpoint string
}

// Configured reports whether the environment asks for trace export:
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
// OTEL_TRACES_EXPORTER is not "none" and OTEL_SDK_DISABLED is not "true". It returns the endpoint traces
// go to, as the exporter derives it.
func Configured(getenv func(string) string) (endpoint string, on bool, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return "", false, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return "", false, nil
	case "", "otlp":
	default:
		return "", false, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: agentmesh exports traces with otlp (or none)", ErrConfig, exp)
	}
	if ep := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); ep != "" {
		endpoint = ep
	} else if ep := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); ep != "" {
		endpoint = strings.TrimSuffix(ep, "/") + "/v1/traces"
	} else {
		return "", false, nil
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(k)); p != "" {
			if p != "http/protobuf" {
				return "", false, fmt.Errorf("%w: %s=%q: agentmesh exports OTLP over http/protobuf only", ErrConfig, k, p)
			}
			break
		}
	}
	return endpoint, true, nil
}

// FromEnv returns the provider the environment configures: exporting over
// OTLP/HTTP with a batch span processor when [Configured] says so, off
// otherwise. The SDK honours OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG) and OTEL_BSP_*; the exporter
// OTEL_EXPORTER_OTLP_* (headers, timeout, certificates, compression). Call
// Shutdown when the component stops.
func FromEnv(ctx context.Context, o Options) (*Provider, error) {
	endpoint, on, err := Configured(o.Getenv)
	if err != nil || !on {
		return &Provider{}, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: OTLP exporter: %w", ErrConfig, err)
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", "agentmesh-"+o.Component),
		attribute.String("agentmesh.component", o.Component),
	}
	if o.Node != "" {
		attrs = append(attrs, attribute.String("agentmesh.node", o.Node))
	}
	// Later options win: the environment overrides the defaults.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("%w: resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES): %w", ErrConfig, err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{sdk: tp, endpoint: redact(endpoint)}, nil
}

// redact returns the endpoint without what may be a credential (user
// information, a query), for what agentmesh prints.
func redact(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "(an endpoint that is not a URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	return u.String()
}

// ShutdownTimeout bounds how long a stopping component waits for its last
// spans to reach the collector.
const ShutdownTimeout = 5 * time.Second

// NewProvider wraps an SDK provider (a test's, with an in-memory
// recorder) as a Provider.
func NewProvider(tp *sdktrace.TracerProvider) *Provider { return &Provider{sdk: tp} }

// Enabled reports whether p exports spans.
func (p *Provider) Enabled() bool { return p != nil && p.sdk != nil }

// Endpoint is where spans go ("" when off, or for NewProvider).
func (p *Provider) Endpoint() string {
	if p == nil {
		return ""
	}
	return p.endpoint
}

// TracerProvider is p's provider for components' configurations; nil when
// off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if !p.Enabled() {
		return nil
	}
	return p.sdk
}

// Shutdown flushes the spans not yet exported and stops the exporter; ctx
// bounds how long it waits for the collector. It is a no-op when off, and
// idempotent.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("traces: shutdown: %w", err)
	}
	return nil
}

// Tracer starts the spans of one component. The zero Tracer is off: Start
// returns the context it was given and a span that records nothing,
// without allocating.
type Tracer struct{ t trace.Tracer }

// NewTracer returns the tracer named name of tp; a nil tp gives the zero
// Tracer.
func NewTracer(tp trace.TracerProvider, name string) Tracer {
	if tp == nil {
		return Tracer{}
	}
	return Tracer{t: tp.Tracer("github.com/agentmesh/agentmesh/" + name)}
}

// On reports whether t records spans: callers skip building attributes and
// parsing trace context when it does not.
func (t Tracer) On() bool { return t.t != nil }

// Start starts a span of kind as a child of the span in ctx.
func (t Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t.t == nil {
		// Never the span in ctx: ending it would end someone else's.
		return ctx, noSpan
	}
	return t.t.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// noSpan records nothing (the span of a context that has none).
var noSpan = trace.SpanFromContext(context.Background())

// StartAt is Start for a span that began at start.
func (t Tracer) StartAt(ctx context.Context, start time.Time, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t.t == nil {
		return ctx, noSpan
	}
	return t.t.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
}

// SpanName is the name of the span of an MCP request: the method, then
// the tool of a tools/call (OpenTelemetry's MCP convention; resource URIs
// and prompt names are left out, a URI may carry data).
func SpanName(method, tool string) string {
	if method == "" {
		method = "mcp"
	}
	if tool != "" {
		return method + " " + tool
	}
	return method
}
