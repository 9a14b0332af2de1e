package connector

import (
	"encoding/json"
	"errors"

	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Sentinel errors returned by this package.
var (
	// ErrNotLoopback is returned by [Listen] and [Connector.ServeListener] for
	// an address that is not a loopback address.
	ErrNotLoopback = loopback.ErrNotLoopback
	// ErrNoToken is returned by [Connector.ServeListener] for a TCP
	// listener without a token or an explicit opt-out.
	ErrNoToken = loopback.ErrNoToken
	// ErrConfig is returned by [New] for an unusable configuration.
	ErrConfig = errors.New("connector: invalid configuration")
	// ErrGatewayURL is returned when Config.Resolve yields an unusable URL
	// (not https, no host).
	ErrGatewayURL = errors.New("connector: invalid gateway URL")
	// ErrMessageTooLarge is returned by [Connector.ServeStdio] when the agent
	// sends a line longer than MaxMessageBytes.
	ErrMessageTooLarge = errors.New("connector: message too large")

	// errGatewayMoved is returned from a dial when Resolve now names another
	// gateway address than the request's URL; the request is retried on the
	// new address.
	errGatewayMoved = errors.New("gateway address changed")
)

// JSON-RPC error codes with which the connector answers a request the gateway
// did not answer. The gateway's own errors (for instance policy denials) are
// passed through unchanged and never use these codes.
const (
	// CodeGatewayHTTPError: the gateway answered with an HTTP error status
	// (403, 404 session expired, 5xx, ...) and no JSON-RPC error of its own.
	// The error data is {"status": N}.
	CodeGatewayHTTPError = -32050
	// CodeGatewayUnreachable: the request never reached a gateway, or the
	// connection broke before the answer arrived. data.reason says why:
	// unknown_service, not_serving (from a ResolveError) or
	// gateway_unreachable, and the message what to do.
	CodeGatewayUnreachable = -32051
	// CodeLocalRefused: the local HTTP endpoint refused the request before
	// it left the machine; data.reason is not_local (a foreign Host or
	// Origin, HTTP 403) or local_auth (no or a wrong bearer token, HTTP
	// 401).
	CodeLocalRefused = -32052
)

// ResolveError is an error of Config.Resolve that says why no gateway can
// be named for the service (reason.UnknownService, reason.NotServing):
// the connector answers the agent's request with CodeGatewayUnreachable,
// Code as data.reason and the error's text as the message, so that the
// person behind the MCP client reads what to do, not only the log. The
// local model endpoint (package modelconn) reads it through its Reason
// method.
type ResolveError struct {
	Code reason.Code
	Err  error
}

func (e *ResolveError) Error() string       { return e.Err.Error() }
func (e *ResolveError) Unwrap() error       { return e.Err }
func (e *ResolveError) Reason() reason.Code { return e.Code }

// unreachable is the JSON-RPC error answering the request id (nil: a null
// id) that did not reach the gateway because of err: the ResolveError's
// reason and text, else gateway_unreachable with what, a one-line
// description of where it failed.
func unreachable(id json.RawMessage, what string, err error) []byte {
	why, msg := reason.GatewayUnreachable, "gateway unreachable: "+what+"; is its 'agentmesh serve' running, and is its address reachable from here?"
	var re *ResolveError
	if errors.As(err, &re) {
		why, msg = re.Code, re.Error()
	}
	return errorResponse(id, CodeGatewayUnreachable, msg, map[string]reason.Code{"reason": why})
}
