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
	// ReasonIdle: a session ended because nothing used it for the idle
	// timeout (Config.SessionIdleTimeout).
	ReasonIdle = "idle"
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
