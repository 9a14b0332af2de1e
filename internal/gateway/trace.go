package gateway

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// traceState is the tracing of one exchange: the caller's trace context,
// then the gateway's server span. Its zero value (tracing off) does
// nothing.
//
// The caller is an admitted mesh peer, authenticated by mTLS (or by the
// tailnet): its traceparent is trusted as the parent of the server span,
// so that a tools/call is one trace from the agent's connector to the
// upstream. It is trusted for nothing else: the trace context is read
// after admission and never reaches a decision, and a malformed or
// oversized one is ignored (see package tracing).
type traceState struct {
	parent context.Context // the request's context with the caller's span context, if any
	ctx    context.Context // with the server span, once started
	span   trace.Span
}

// traceBegin takes the caller's trace context from the request's
// traceparent and tracestate headers.
func (g *Gateway) traceBegin(r *http.Request, x *exchange) {
	if !g.tr.On() {
		return
	}
	x.trace.parent, _ = tracing.Extract(r.Context(), r.Header)
}

// traceMessage prefers, from MCP 2026-07-28 on, the trace context in the
// message's params._meta (SEP-414): it is the message's own, where the
// headers are the HTTP request's. Before 2026-07-28 _meta is not read.
func (g *Gateway) traceMessage(r *http.Request, x *exchange, m *mcpwire.Message) {
	if !g.tr.On() || x.trace.span != nil || r.Header.Get(mcpwire.HeaderProtocolVersion) < mcpwire.VersionStateless {
		return
	}
	tp, err := m.MetaString(tracing.MetaKeyTraceParent)
	if err != nil || tp == "" {
		return
	}
	ts, _ := m.MetaString(tracing.MetaKeyTraceState)
	if ctx, ok := tracing.ExtractValues(r.Context(), tp, ts); ok {
		x.trace.parent = ctx
	}
}

// traceServer starts the server span if it has not started (its start is
// the request's arrival) and returns the context with it.
func (g *Gateway) traceServer(r *http.Request, x *exchange) context.Context {
	if !g.tr.On() {
		return r.Context()
	}
	if x.trace.span == nil {
		parent := x.trace.parent
		if parent == nil {
			parent = r.Context()
		}
		var tool string
		if x.msg != nil && x.msg.Method == "tools/call" {
			tool = x.ev.Tool
		}
		// The span starts when it is known what it is for, timed from
		// the request's arrival.
		x.trace.ctx, x.trace.span = g.tr.StartAt(parent, x.start, tracing.SpanName(x.ev.Method, tool), trace.SpanKindServer)
	}
	return x.trace.ctx
}

// traceDecided records the decision as a span under the server span.
func (g *Gateway) traceDecided(r *http.Request, x *exchange, v verdict) {
	if !g.tr.On() {
		return
	}
	_, s := g.tr.Start(g.traceServer(r, x), "agentmesh.decide", trace.SpanKindInternal, decisionAttrs(x, v)...)
	s.End()
}

func decisionAttrs(x *exchange, v verdict) []attribute.KeyValue {
	d := audit.Deny
	if v.allow {
		d = audit.Allow
	}
	attrs := []attribute.KeyValue{
		attribute.String(tracing.AttrDecision, string(d)),
		attribute.String(tracing.AttrReason, string(v.reason)),
		attribute.String(tracing.AttrPolicyVersion, v.version),
		attribute.String(tracing.AttrAuditEventID, x.ev.ID),
	}
	if r := v.rule(); r != "" {
		attrs = append(attrs, attribute.String(tracing.AttrRule, r))
	}
	return attrs
}

// traceUpstream starts the span of the upstream hop and returns the request
// the upstream sees, whose context carries it; the upstream's HTTP request
// gets its traceparent in headers and, from MCP 2026-07-28 on, a POST body
// gets it in params._meta (replacing the caller's). end ends the span.
func (g *Gateway) traceUpstream(r *http.Request, x *exchange) (*http.Request, func()) {
	if !g.tr.On() {
		return r, func() {}
	}
	ctx, s := g.tr.Start(g.traceServer(r, x), "agentmesh.upstream", trace.SpanKindClient,
		attribute.String(tracing.AttrMethod, x.ev.Method))
	if x.body != nil && x.msg != nil && x.msg.Kind != mcpwire.KindResponse &&
		r.Header.Get(mcpwire.HeaderProtocolVersion) >= mcpwire.VersionStateless {
		if b, ok := tracing.InjectMeta(ctx, x.body); ok {
			x.body = b
		}
	}
	return r.WithContext(ctx), func() {
		if x.outcome == audit.OutcomeUpstreamError {
			s.SetStatus(codes.Error, "upstream error")
		}
		if x.ev.Outcome != "" {
			s.SetAttributes(attribute.String(tracing.AttrOutcome, string(x.ev.Outcome)))
		}
		s.End()
	}
}

// traceEnd ends the server span with what the audit event says of the
// request: never an argument value.
func (g *Gateway) traceEnd(r *http.Request, x *exchange) {
	if !g.tr.On() {
		return
	}
	g.traceServer(r, x)
	ev := x.ev
	attrs := []attribute.KeyValue{
		attribute.String(tracing.AttrMethod, ev.Method),
		attribute.String(tracing.AttrPeer, ev.Src),
		attribute.String(tracing.AttrAuditEventID, ev.ID),
		attribute.String(tracing.AttrPolicyVersion, ev.PolicyVersion),
	}
	if ev.Decision != "" {
		attrs = append(attrs, attribute.String(tracing.AttrDecision, string(ev.Decision)))
	}
	if ev.Reason != "" {
		attrs = append(attrs, attribute.String(tracing.AttrReason, string(ev.Reason)))
	}
	if ev.Outcome != "" {
		attrs = append(attrs, attribute.String(tracing.AttrOutcome, string(ev.Outcome)))
	}
	if ev.Tool != "" {
		attrs = append(attrs, attribute.String(tracing.AttrToolName, ev.Tool))
	}
	if v := r.Header.Get(mcpwire.HeaderProtocolVersion); v != "" && len(v) <= 32 {
		attrs = append(attrs, attribute.String(tracing.AttrProtocolVersion, v))
	}
	x.trace.span.SetAttributes(attrs...)
	if ev.Outcome == audit.OutcomeUpstreamError {
		x.trace.span.SetStatus(codes.Error, "upstream error")
	}
	x.trace.span.End()
}
