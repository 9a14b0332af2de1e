package gateway

import "errors"

// JSON-RPC error codes the gateway answers with. They are stable and
// documented: clients and the connector may match on them.
const (
	// CodeDenied is a policy denial: the request was well formed but the
	// policy does not allow it. It was not forwarded.
	CodeDenied = -32040
	// CodeRejected is malformed or smuggling input: duplicate or
	// case-variant keys, header/body mismatch, a session id that belongs to
	// somebody else. It was not forwarded.
	CodeRejected = -32041
	// CodeLimited: the peer, or all peers together, already hold as much
	// as the gateway allows (sessions, upstream processes, request bodies
	// in memory), or the body arrived too slowly. It was not forwarded;
	// the same request may succeed later.
	CodeLimited = -32042
	// CodeHeaderMismatch is MCP's HeaderMismatch error (2026-07-28): the
	// Mcp-Method, Mcp-Name, Mcp-Protocol-Version or Mcp-Param-* headers
	// disagree with the body (reason header_mismatch). A client that gets
	// it for Mcp-Param-* headers lists tools again and retries. It was not
	// forwarded.
	CodeHeaderMismatch = -32020
)

// Reason codes of the gateway's own refusals, beside the policy's reason
// codes ("no_grant", "not_granted", "when_false", ...), which are passed
// through unchanged.
const (
	ReasonAllowed         = "allowed"
	ReasonUnknownMethod   = "unknown_method"
	ReasonMalformed       = "malformed"
	ReasonBatch           = "batch_rejected"
	ReasonHeaderMismatch  = "header_mismatch"
	ReasonNoCertificate   = "no_certificate"
	ReasonBadIdentity     = "bad_identity"
	ReasonUnknownPeer     = "unknown_peer"
	ReasonRevoked         = "revoked"
	ReasonStaleCert       = "stale_incarnation"
	ReasonNoPolicy        = "no_policy"
	ReasonNotLinked       = "no_grant"
	ReasonUnknownSession  = "unknown_session"
	ReasonSessionMismatch = "session_owner_mismatch"
	ReasonUpstream        = "upstream_error"
	ReasonTooLarge        = "too_large"
	ReasonBadHTTP         = "bad_http_request"
	// ReasonAuditFailed: the request was allowed but its audit event could
	// not be recorded, so its answer was withheld (HTTP 503).
	ReasonAuditFailed = "audit_failed"
	// ReasonUnknownTask: a tasks/get, tasks/result, tasks/cancel or
	// tasks/update names a task the caller does not own (unknown, expired
	// from the gateway's table, or another identity's): not forwarded.
	ReasonUnknownTask = "unknown_task"
	// ReasonIdle: a session ended because nothing used it for the idle
	// timeout (Config.SessionIdleTimeout).
	ReasonIdle = "idle"
	// ReasonTooManyRequests: the peer already has as many requests in
	// flight, open streams included, as it may (Config.MaxRequestsPerPeer).
	ReasonTooManyRequests = "too_many_requests"
	// ReasonTooManySessions: an initialize would open more sessions than
	// the peer may hold (Config.MaxSessionsPerPeer).
	ReasonTooManySessions = "too_many_sessions"
	// ReasonTooManyProcesses: a session would start more stdio upstream
	// processes than the peer, or the gateway, may run
	// (Config.MaxProcessesPerPeer, Config.MaxProcesses).
	ReasonTooManyProcesses = "too_many_processes"
	// ReasonOverBudget: the request body does not fit in what remains of
	// the peer's or the gateway's memory budget for bodies
	// (Config.Bodies).
	ReasonOverBudget = "over_budget"
	// ReasonBodyTimeout: the request body did not arrive whole within
	// Config.Bodies.Timeout.
	ReasonBodyTimeout = "body_timeout"
	// ReasonStaleNetmap: the coordinator has not confirmed the gateway's
	// view of the mesh for longer than a certificate lifetime (State.Stale),
	// so nobody is admitted until it answers again.
	ReasonStaleNetmap = "stale_netmap"
)

// Errors returned by New and Serve; match them with errors.Is.
var (
	// ErrConfig: the configuration is incomplete or invalid.
	ErrConfig = errors.New("invalid gateway configuration")
	// ErrUpstream: the upstream could not be reached or failed.
	ErrUpstream = errors.New("upstream failed")
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("gateway already serving")
	// errAuditBlocked: a response write after its audit record failed.
	errAuditBlocked = errors.New("response withheld: audit record failed")
)
