package tailnet

import "errors"

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("tailnet: invalid configuration")
	// ErrCapability reports a capability value that cannot become a policy.
	ErrCapability = errors.New("tailnet: invalid capability value")
)

// Reason codes of refusals, as they appear in audit events and in the
// JSON-RPC error a refused caller receives.
const (
	// ReasonWhoIsFailed: WhoIs did not name a node for the remote address.
	ReasonWhoIsFailed = "whois_failed"
	// ReasonBadNodeName: the node's host name is not a valid agentmesh name.
	ReasonBadNodeName = "bad_node_name"
	// ReasonNoCapability: SourceTailnet, and the tailnet policy grants the
	// caller no CapabilityMCP towards this node.
	ReasonNoCapability = "no_capability"
	// ReasonBadCapability: a CapabilityMCP value does not decode or compile.
	ReasonBadCapability = "bad_capability"
)
