package connector

import (
	"errors"

	"agentmesh/internal/loopback"
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
	// CodeGatewayUnreachable: the gateway could not be reached, or the
	// connection broke before the answer arrived.
	CodeGatewayUnreachable = -32051
	// CodeLocalRefused: the local HTTP endpoint refused the request before
	// it left the machine; data.reason is not_local (a foreign Host or
	// Origin, HTTP 403) or local_auth (no or a wrong bearer token, HTTP
	// 401).
	CodeLocalRefused = -32052
)
