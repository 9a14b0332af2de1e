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
	// CodeUpstream: the request was admitted, but the upstream MCP server
	// could not be started or reached, failed, or answered what the
	// gateway cannot pass on (reason upstream_error). It is not a policy
	// decision: the operator of the gateway has to act (its log has the
	// cause, under the event id); the same request may succeed later.
	CodeUpstream = -32043
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
	// errClientGone: writing a stream's event to the client failed.
	errClientGone = errors.New("client gone")
)
