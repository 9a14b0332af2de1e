// Package tailnet runs agentmesh on an existing tailnet (Tailscale or
// Headscale): a gateway or connector joins it as its own node with
// tailscale.com/tsnet (userspace networking, no root, no TUN device), the
// gateway listens there and identifies every caller with WhoIs, and the
// connector dials gateways by their tailnet host names.
//
// Use Join to bring a Node up, Node.Listen for the gateway's listener,
// Node.Dial for the connector, NewIdentifier for the gateways'
// admission.Identifier, and Node.WatchNetmap to call a gateway's Recheck
// when the tailnet's netmap (and with it identities and capabilities)
// changes.
//
// # Policy sources
//
// With SourceAgentmesh, the caller becomes a policy.Node built from WhoIs
// and agentmesh's own policy decides: a tagged node matches tag:NAME for
// its tailnet tags and agent:NAME for its MagicDNS host name; a node owned
// by a person (untagged) matches user:LOGIN for its owner's login, and not
// agent:NAME, because whoever joins a device picks its name. With SourceTailnet, the values of the app capability
// CapabilityMCP ("agentmesh.dev/cap/mcp") that the tailnet policy file
// grants the caller towards this node are turned into an agentmesh policy
// for that caller alone (see CapabilityValue), compiled once per distinct
// set of values.
//
// # Threat model
//
// WireGuard gives confidentiality and integrity of every packet and binds
// the packet's tailnet source address to the peer's node key: a packet
// arriving from 100.x.y.z on the tsnet listener was sent by the node that
// control assigned that address, so WhoIs on the connection's remote
// address names the sender. That is why this path needs no TLS client
// certificate. What WhoIs gives is exactly what the control server says:
// node, tags, owner and the capabilities granted to it; a compromised or
// malicious control server (or Headscale operator) can therefore mint any
// identity, and trusting this package means trusting the tailnet's control
// plane as well as agentmesh's policy.
//
// Everything fails closed: a failed or ambiguous WhoIs, a node name that is
// not a valid agentmesh name, a capability value that does not decode
// strictly or does not compile, or a missing capability under
// SourceTailnet refuses the caller, with a stable reason code in the audit
// event and the details in the log. Tags that are not valid agentmesh tags
// are dropped with a log line (grants only allow, so a dropped tag can only
// take access away). Identities are re-resolved on every request and when
// the netmap changes, so a revoked node or a withdrawn capability takes
// effect on open sessions (list_changed, then denial) without reconnecting.
//
// Out of scope: the tailnet's own packet filter decides who may reach the
// gateway's port at all; this package adds per-tool enforcement on top and
// does not replace it.
package tailnet
