package modelgw

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// Span attributes of model requests, beside package tracing's.
const (
	attrModel      = "gen_ai.request.model" // the model the policy decided on
	attrHTTPMethod = "http.request.method"
	attrRoute      = "url.path" // the API path (/v1/chat/completions); never the query
)

// traceServer starts the server span of an admitted request, continuing the
// caller's W3C trace context (an admitted mesh peer, authenticated: its
// traceparent is trusted as the parent and for nothing else). end sets what
// the audit event says of the request and ends the span; never a prompt,
// a completion or a key.
func (g *Gateway) traceServer(r *http.Request, x *request) (*http.Request, func()) {
	if !g.tr.On() {
		return r, func() {}
	}
	parent, _ := tracing.Extract(r.Context(), r.Header)
	ctx, s := g.tr.StartAt(parent, x.start, r.Method+" "+r.URL.Path, trace.SpanKindServer)
	return r.WithContext(ctx), func() {
		ev := &x.ev
		attrs := []attribute.KeyValue{
			attribute.String(attrHTTPMethod, r.Method),
			attribute.String(attrRoute, r.URL.Path),
			attribute.String(tracing.AttrPeer, ev.Src),
			attribute.String(tracing.AttrPolicyVersion, ev.PolicyVersion),
		}
		for k, v := range map[string]string{
			tracing.AttrDecision: string(ev.Decision), tracing.AttrReason: string(ev.Reason),
			tracing.AttrAuditEventID: ev.ID, tracing.AttrOutcome: string(ev.Outcome), attrModel: ev.Model,
		} {
			if v != "" {
				attrs = append(attrs, attribute.String(k, v))
			}
		}
		s.SetAttributes(attrs...)
		if ev.Outcome == audit.OutcomeUpstreamError {
			s.SetStatus(codes.Error, "upstream error")
		}
		s.End()
	}
}

// traceUpstream starts the span of the upstream hop; its context goes in
// the upstream request's traceparent header (set by the caller with
// tracing.Inject on the returned context).
func (g *Gateway) traceUpstream(ctx context.Context) (context.Context, trace.Span) {
	return g.tr.Start(ctx, "agentmesh.upstream", trace.SpanKindClient)
}
