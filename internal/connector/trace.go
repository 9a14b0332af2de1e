package connector

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// traceStart starts the client span of one message (or GET stream, or
// DELETE) sent to the gateway. Its parent is the agent's trace, when the
// agent sent one: in params._meta (m's traceparent, any protocol version)
// or else in the local request's headers (h; nil in stdio mode). The agent
// is this node's own client, authenticated by the endpoint's token or
// socket: its trace context is trusted as the parent and for nothing else.
// roundTrip puts the span's context in the gateway request's headers, and
// withTraceMeta in the body of a 2026-07-28 message.
func (c *Connector) traceStart(ctx context.Context, h http.Header, m *message, httpMethod string) (context.Context, trace.Span) {
	if !c.tr.On() {
		return ctx, nil
	}
	parent := ctx
	ok := false
	if m != nil && m.traceparent != "" {
		parent, ok = tracing.ExtractValues(ctx, m.traceparent, m.tracestate)
	}
	if !ok && h != nil {
		parent, _ = tracing.Extract(ctx, h)
	}
	method, tool, version := httpMethod, "", ""
	if m != nil && m.method != "" {
		method = m.method
		if m.method == "tools/call" {
			tool = m.name
		}
		version = m.version
	}
	if version == "" && h != nil {
		version = h.Get(mcpwire.HeaderProtocolVersion)
	}
	attrs := []attribute.KeyValue{
		attribute.String(tracing.AttrMethod, method),
		attribute.String(tracing.AttrService, c.service),
	}
	if tool != "" {
		attrs = append(attrs, attribute.String(tracing.AttrToolName, tool))
	}
	if version != "" && len(version) <= 32 {
		attrs = append(attrs, attribute.String(tracing.AttrProtocolVersion, version))
	}
	return c.tr.Start(parent, tracing.SpanName(method, tool), trace.SpanKindClient, attrs...)
}

// traceEnd ends a span of traceStart with the gateway's HTTP status, or the
// error that kept the request from it.
func traceEnd(s trace.Span, status int, err error) {
	if s == nil {
		return
	}
	if err != nil {
		s.SetStatus(codes.Error, "gateway unreachable")
	} else {
		s.SetAttributes(attribute.Int(tracing.AttrStatusCode, status))
		if status >= 500 {
			s.SetStatus(codes.Error, http.StatusText(status))
		}
	}
	s.End()
}

// withTraceMeta returns the body of m with the trace context of the span in
// ctx in params._meta, as MCP 2026-07-28 carries it (SEP-414), when m is a
// request or notification of that version whose body the strict decoder
// accepts; otherwise raw unchanged. A body the gateway will refuse is not
// tidied up on the way.
func (c *Connector) withTraceMeta(ctx context.Context, m *message, version string) []byte {
	if !c.tr.On() || version < mcpwire.VersionStateless || (m.kind != kindRequest && m.kind != kindNotification) {
		return m.raw
	}
	if _, _, err := mcpwire.Decode(m.raw, mcpwire.Limits{MaxBytes: c.maxMsg}); err != nil {
		return m.raw
	}
	if b, ok := tracing.InjectMeta(ctx, m.raw); ok {
		return b
	}
	return m.raw
}

// statusOf is resp's status code, 0 for no response.
func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// tracedBody is a POST body the local endpoint read whole to trace it:
// the message (with the trace context in _meta, for 2026-07-28), or, when
// the agent sent more than a message may hold, what was read followed by
// the rest, forwarded without a look (the gateway refuses it).
type tracedBody struct {
	b    []byte
	rest io.Reader // nil when b is the whole body
	used bool
}

// reader returns the body for one attempt; a body with a rest is not
// replayable.
func (t *tracedBody) reader() io.Reader {
	if t.rest == nil {
		return bytes.NewReader(t.b)
	}
	if t.used {
		return errReader{errNotReplayable}
	}
	t.used = true
	return io.MultiReader(bytes.NewReader(t.b), t.rest)
}

// length is the Content-Length to send: -1 (unknown) for a body with a
// rest.
func (t *tracedBody) length() int64 {
	if t.rest != nil {
		return -1
	}
	return int64(len(t.b))
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// trace starts the span of a local endpoint request. With tracing on, a
// POST body is read (up to the message bound) so that the span can name
// the method and tool and continue a trace in _meta, and the trace context
// can go in _meta (2026-07-28); tb is then the body to send instead of
// body. With tracing off it does nothing and the body streams as before.
func (p *proxy) trace(r *http.Request, body io.Reader) (ctx context.Context, tb *tracedBody, span trace.Span) {
	if !p.c.tr.On() {
		return r.Context(), nil, nil
	}
	if r.Method != http.MethodPost {
		ctx, span = p.c.traceStart(r.Context(), r.Header, nil, r.Method)
		return ctx, nil, span
	}
	b, err := io.ReadAll(io.LimitReader(body, int64(p.c.maxMsg)+1))
	if err != nil || len(b) > p.c.maxMsg {
		ctx, span = p.c.traceStart(r.Context(), r.Header, nil, r.Method)
		return ctx, &tracedBody{b: b, rest: body}, span
	}
	m := parseMessage(b)
	ctx, span = p.c.traceStart(r.Context(), r.Header, &m, r.Method)
	version := m.version
	if version == "" {
		version = r.Header.Get(mcpwire.HeaderProtocolVersion)
	}
	return ctx, &tracedBody{b: p.c.withTraceMeta(ctx, &m, version)}, span
}
