// Package gateway is the server side of the agentmesh data plane: it
// terminates mutual TLS 1.3, identifies the peer from its certificate,
// enforces the policy on every MCP message, forwards what is allowed to one
// upstream MCP server (a Streamable HTTP URL or a stdio command) and hands
// every decision to the audit recorder.
//
// # Use
//
//	gw, err := gateway.New(gateway.Config{TLS: tlsCfg, Upstream: gateway.HTTPUpstream{URL: u}, Audit: spool}, state)
//	go gw.Serve(ctx, ln)      // https://ADDR/mcp
//	gw.Update(newState)       // on every netmap or policy change
//
// # Threat model
//
// Every client is a remote mesh node that may be malicious: it holds a valid
// certificate (or a stolen, revoked, or stale one) and sends arbitrary bytes.
// The upstream MCP server is trusted to do what it is told, but not to
// defend itself: anything the gateway forwards, it executes. The gateway
// therefore defends as follows.
//
//   - Identity comes only from the verified TLS client certificate
//     (identity.FromCertificate and pki.Incarnation); it must name an active
//     peer of the current State with the same incarnation, and the policy
//     must link it to this gateway, else the request is refused with HTTP 403
//     and an audit event of kind "connection". Tags come from State, never
//     from the peer.
//   - The one exception is a Config.Identifier, for a listener whose
//     transport authenticates its peers itself (a tailnet, see package
//     tailnet): a request without TLS is then identified by the Identifier
//     on every request, and refused on any doubt; sessions are bound to the
//     caller's stable key, and Recheck re-identifies open sessions when the
//     transport reports changes. Without an Identifier, Serve refuses to
//     serve without TLS.
//   - Every POST body is read once, bounded by Limits.MaxBytes, within the
//     body budget and deadline of Config.Bodies (package budget), and
//     decoded once by mcpwire's strict decoder,
//     which rejects duplicate and case-variant keys, invalid UTF-8, and
//     excessive size or nesting. The exact bytes that were evaluated are
//     forwarded; the gateway never re-encodes a request, so the upstream
//     cannot see anything the policy did not.
//   - An admitted peer may still be hostile and try to exhaust the
//     gateway. What it can make the gateway hold is bounded and reserved
//     before it is taken: requests in flight per peer, open streams
//     included (Config.MaxRequestsPerPeer), open sessions per peer
//     (Config.MaxSessionsPerPeer), stdio upstream processes per peer and
//     in all (Config.MaxProcessesPerPeer, Config.MaxProcesses; a process
//     counts until it has exited), and the bytes of request bodies in
//     memory per peer and in all (Config.Bodies, reserved from
//     Content-Length before a byte is read, or as bytes arrive). Over a
//     cap the request is refused at once with [CodeLimited] and one audit
//     event, before anything reaches the upstream or a process starts;
//     nothing waits in a queue. A body must arrive whole within
//     Config.Bodies.Timeout; the deadline ends with the body, so slow
//     answers and long-lived streams are not cut.
//   - JSON-RPC batches are rejected as a whole (-32600): one POST carries one
//     message, so a denied element can never ride along with allowed ones.
//   - For protocol 2026-07-28 and later (or whenever the headers are
//     present), Mcp-Method and Mcp-Name must equal the method and name in the
//     body, and Mcp-Protocol-Version must equal the version in _meta; a
//     mismatch is rejected (header_mismatch, MCP's HeaderMismatch code
//     -32020), because an upstream or middlebox routing on the headers would
//     otherwise act on something the policy never saw. An Mcp-Param-* header
//     (a tool argument mirrored by x-mcp-header) is forwarded only when the
//     tool's schema, as the gateway saw it in tools/list, declares it and its
//     value equals the argument the policy judged (see paramheaders.go).
//     Headers that mirror a body pass only on a POST.
//   - Methods are allow-listed. tools/call, resources/read,
//     resources/subscribe, prompts/get, completion/complete and the
//     resourceSubscriptions of subscriptions/listen are decided by the
//     policy; tools/list, prompts/list, resources/list,
//     resources/templates/list and tasks/list are answered with the
//     upstream's result filtered to what the peer may see (tasks/list: its
//     own tasks); tasks/get, tasks/result and tasks/update reach only a task
//     the caller created and are decided again as the request that created
//     it, tasks/cancel reaches only the caller's own task (tasks.go); the
//     requests in passThrough and the notifications in clientNotifications
//     (enforce.go, each with the reason it needs no decision) and responses
//     to server-initiated requests pass through; every other method is
//     denied ("unknown_method"), with no prefix wildcard.
//   - A delegation (the Agentmesh-Delegation header: the caller acts for
//     a person) is verified against the CA bundle, the caller's own
//     certificate and the netmap's revocations before anything else, and
//     narrows, never widens: a delegated request must be allowed for the
//     caller with the delegation, within its scope, and for the person and
//     every agent before the caller in its chain (delegation.go). Sessions,
//     tasks and streams are bound to it; sessions whose delegation lapses
//     are ended on Update and the idle sweep. A caller without a
//     certificate that presents one is refused.
//   - Tool definitions are pinned by the policy (tool_pins, package
//     toolpin; pins.go): every tools/list result is hashed where it is
//     filtered, a tool whose definition does not match its pin is hidden
//     and its calls refused (tool_changed), a list naming one tool twice
//     or holding a definition too large to hash is refused whole, and
//     each drift is audited once with a bounded diff. Server-provided
//     definitions are never trusted to have stayed as reviewed.
//   - Every resource URI a rule matches must be in canonical form and every
//     key the gateway or a when reads must be spelled exactly (see package
//     policy and mcpwire): a spelling the upstream reads as the same thing
//     is refused, not matched differently.
//   - A server-to-client stream (a GET, or subscriptions/listen) belongs to
//     a session, the caller's stateless one when it names none; every
//     response on it, which is where a resumption with Last-Event-ID
//     replays what a broken POST stream lost, is filtered by the shape of
//     its result exactly as on the stream of its request. Last-Event-ID
//     passes only on a GET that names a session: without one the upstream
//     cannot tell whose stream an event id names.
//   - A session id is bound to the identity whose initialize created it. The
//     same id presented by anybody else is answered 404, exactly as an
//     unknown id, so that ids cannot be probed, and the attempt is audited.
//   - Client credentials (Authorization, Cookie and every header not on a
//     short allow list, mcpwire's, the same for every hop) are never passed
//     upstream.
//   - Update applies a new State to the next message of every open session;
//     sessions whose visible tools, prompts or resources changed receive the
//     matching notifications/*/list_changed; peers that lost all access, were
//     revoked or disappeared have their TLS connections closed, their
//     streams ended and their stdio processes stopped at once.
//
// # Errors seen by clients
//
// A policy denial is a JSON-RPC error with code [CodeDenied] (-32040); input
// that is malformed or looks like smuggling (duplicate keys, header/body
// mismatch, bad session use) gets [CodeRejected] (-32041); a request over
// a cap gets [CodeLimited] (-32042) with HTTP 429 when the peer is over its
// own share, 503 when the gateway is full (reasons too_many_requests,
// too_many_sessions,
// too_many_processes, over_budget) or 408 (body_timeout); a batch gets
// -32600. An admitted request whose upstream could not be started or
// reached, or failed, gets [CodeUpstream] (-32043, HTTP 502, reason
// upstream_error): not a policy decision, and its message never carries
// the upstream's address or command (the log has them under the event
// id). In each case data is {"reason": "<code>", "event_id": "<audit id>"}:
// the reason code is the same one written to the audit event with that id.
// Refused connections get HTTP 403 with the same JSON body shape.
//
// # Upstreams
//
// [HTTPUpstream] is a lean message-level reverse proxy: requests go out on a
// keep-alive transport, JSON and SSE responses stream back as they arrive
// (flushed per read); only list responses (to filter them), the events of
// server-to-client streams (to filter replayed lists) and the answers to
// requests that may create a task (to bind it) are parsed.
// A request whose bytes never reached the upstream is retried on a fresh
// connection; a request that was written is never replayed.
//
// [HandlerUpstream] is an MCP server in the gateway's process: the same
// code path as HTTPUpstream, with the request handed to an http.Handler by
// a function call (over a pipe, so responses still stream) instead of
// over a connection. The public mesh package serves a Go MCP server this
// way, so that a server enforcing in-process decides, refuses and audits
// exactly as a gateway in front of it would.
//
// [CommandUpstream] starts one process per client session (so identities
// never share server state) and speaks Streamable HTTP to the client itself,
// with the MCP SDK's StreamableServerTransport, pumping messages to the
// process's stdio. The process ends with the session; its stderr goes to the
// gateway's log. A stdio upstream serves the session protocol versions
// (2025-03-26 to 2025-11-25); stateless 2026-07-28 requests are answered
// with the SDK's unsupported-version error so clients fall back to
// initialize. Server-to-client messages of a stdio upstream travel on the
// session's GET stream.
//
// # Tracing
//
// With Config.TracerProvider set, every admitted request is a server span
// (trace.go) whose parent is the caller's W3C trace context (headers, or
// params._meta from MCP 2026-07-28 on), with children for the decision and
// the upstream hop; the upstream's request carries the hop's context in
// its headers and, from 2026-07-28 on, in _meta (the only change the
// gateway makes to a forwarded body, after the decision). The trace
// context is read after admission and never reaches a decision.
package gateway
