// Package modelgw is the agentmesh data plane for model endpoints: an
// identity-aware reverse proxy in front of an OpenAI-compatible HTTP API.
//
// The server side, [Gateway], runs on the mTLS listener of a node of kind
// model (`agentmesh serve --upstream URL` on a model node). It identifies
// every client from its certificate as the MCP gateway does
// ([gateway.IdentifyRequest] under a [gateway.State]), decides every request
// with the policy, enforces the policy's limits, forwards what is allowed
// to the upstream and records an audit event per request with the model,
// decision, HTTP status, latency, time to first byte and the token usage
// the upstream reported.
//
// On a tailnet (agentmesh serve --tailnet on a model node) a second Gateway
// serves without TLS and identifies callers through Config.Identifier, as
// the MCP gateway does; Recheck re-checks requests in progress when the
// tailnet's netmap changes.
//
// The client side, what `agentmesh connect model:NAME --listen
// 127.0.0.1:PORT` runs, is client code and lives with the connector
// (package connector/modelconn); both sides write refusals in the shape of
// package modelwire.
//
// # What is decided how
//
//   - POST /v1/chat/completions, /v1/completions, /v1/embeddings and
//     /v1/responses are decided on the "model" string of the JSON body
//     (policy.ActionModel); a grant's `when` sees the model, the path, the
//     HTTP method and the body's fields as args (args.max_tokens,
//     args.stream, ...). The bytes that were decided are the bytes
//     forwarded.
//   - GET /v1/models is filtered to the models the caller may use (an
//     answer that cannot be parsed is an error, never the unfiltered list);
//     GET /v1/models/ID is decided as a request for model ID.
//   - Every other method and path is denied unless a grant's paths list
//     covers "METHOD /path" (policy.ActionPath).
//   - Limits (policy.Limits: requests per minute in a fixed window starting
//     on the minute, tokens per UTC day, counted per source identity and
//     limit) are checked once a grant allowed; going over is HTTP 429 with
//     Retry-After. A streamed chat or text completion under a
//     tokens_per_day limit must set stream_options.include_usage, since its
//     tokens could not be counted otherwise (403 usage_required).
//
// # Threat model
//
// Clients are remote mesh nodes that may be malicious, as for the MCP
// gateway (see package gateway): identity comes only from the verified
// certificate, admission is checked on every request (a refusal is audited
// as a refused connection), and the zero State denies everything. In
// addition:
//
//   - A body parser that disagrees with the upstream is a bypass
//     ({"model":"allowed","model":"denied"}): bodies are validated by
//     mcpwire's strict validator first, so duplicate or case-variant keys
//     at any depth, invalid UTF-8 or excessive nesting are refused (400
//     malformed) rather than guessed at, and requests are never re-encoded.
//   - Paths are matched as sent and must be canonical; a path with
//     percent-encoding, dot or empty segments is refused (bad_path) rather
//     than normalised, so a grant's path glob and the upstream's router see
//     the same path.
//   - Only a short allow list of client headers (Accept, Content-Type,
//     User-Agent, OpenAI-Beta, Idempotency-Key) reaches the upstream: the
//     client's credentials (Authorization, Cookie, Api-Key, ...) never do;
//     the gateway's own upstream credential comes from
//     Config.UpstreamHeader. The local endpoint (modelconn) drops them
//     before they leave the machine.
//   - Requests in flight are capped per caller, streams included (429
//     too_many_requests, Config.MaxRequestsPerPeer).
//   - Request bodies are bounded (413), held in memory within the same
//     body budget per caller and in all as the MCP gateway's (Config.Bodies,
//     package budget: reserved before they are read, over it 429 or 503
//     over_budget at once), and must arrive within a deadline (408
//     body_timeout); streamed responses pass through chunk by chunk, and
//     their usage is read as they pass.
//   - Update re-checks every request in progress: the requests and streams
//     of a peer that was revoked, removed or lost its grant are cut at once.
//   - Limit counters are appended to a log in Config.StateDir
//     (CountersFile, one line per changed counter) before the request they
//     count goes on, and the log is fsynced at most SyncInterval (1 s)
//     later, not per request (an fsync is milliseconds; the write is
//     microseconds). So a restart or a crash of the process loses no count,
//     a clean stop (Close, which Serve calls) loses none, and a crash of the
//     machine loses at most the last second's counts: a caller can then go
//     over a limit by what it was counted in that second. Fail closed: a
//     counters log that cannot be read or is corrupt before its last line
//     stops New (starting from zero would lift every limit); a write or
//     fsync that fails refuses every limited request (503
//     limits_unavailable) until the log has been rewritten from memory;
//     and when the counter table is full a request that needs a new
//     counter is refused rather than a live counter forgotten.
//
// The upstream is trusted to do what it is told and to report usage
// honestly; token limits count what it reports.
//
// # Audit
//
// Every request has one event. A refusal is recorded before it is
// answered, so the audit_event id in the body exists. A non-streamed answer
// is recorded before it is relayed; a stream is recorded when it ends, since
// only then are its usage and latency known (its ttfb_us is the time to its
// first chunk).
//
// # Errors seen by clients
//
// Refusals are JSON in the shape OpenAI clients parse, plus the reason code
// and the id of the audit event that recorded the refusal (also inside
// "error", because SDKs expose only that object):
//
//	{"error": {"type": "permission_denied", "code": "not_granted", "message": "...", "audit_event": "9f2c..."},
//	 "reason": "not_granted", "audit_event": "9f2c..."}
//
// with HTTP 400 (malformed, bad_path), 403 (admission and policy reasons,
// usage_required), 408 (body_timeout), 413 (too_large), 429 (limit_rpm,
// limit_tokens, too_many_requests, over_budget), 502 (upstream_error) or 503
// (limits_unavailable, audit_failed, over_budget).
//
// With Config.TracerProvider set, every admitted request is a server span
// (trace.go) under the caller's W3C traceparent header (an admitted,
// authenticated peer; the trace context reaches no decision), carrying
// the decision, model, policy version and audit event id, with a child
// span for the upstream hop whose context goes to the upstream in its
// traceparent header.
package modelgw
