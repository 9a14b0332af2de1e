// Package tracing is agentmesh's OpenTelemetry tracing: a per-component
// TracerProvider that exports spans over OTLP/HTTP when the standard
// environment asks for it, and the W3C Trace Context propagation the data
// plane uses between hops (HTTP headers, and params._meta of MCP
// 2026-07-28 messages as SEP-414 documents).
//
// Export is on only when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set and OTEL_TRACES_EXPORTER is not
// "none" (see [FromEnv]); otherwise a component gets the zero [Tracer],
// whose methods do nothing and allocate nothing. Each gateway and connector
// has a provider of its own (tests and the demo run several in one
// process), never the global one, and shuts it down (flushing its spans) as
// it stops.
//
// Threat model. Trace context comes from peers: a connector's local client
// (authenticated by the endpoint's token or socket) and, at a gateway, a
// mesh peer (authenticated by mTLS). Both are accepted as the parent of
// the span that handles their request, but nothing else is taken from
// them: the W3C propagator parses traceparent strictly (a malformed one is
// ignored and the span starts a new trace), [Extract] drops a tracestate
// longer than [MaxTraceStateLen] and a traceparent longer than
// [MaxTraceParentLen], baggage is neither read nor sent, and no decision
// ever reads the trace context. What spans record is listed in the
// Attr* constants: metadata a policy already sees (method, tool name,
// decision, reason, policy version, audit event id, the peer's SPIFFE ID),
// never argument values, resource contents, tokens or secrets.
package tracing
