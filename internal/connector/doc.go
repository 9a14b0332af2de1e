// Package connector is the client side of the agentmesh data plane. It runs on
// an agent host, holds the agent's node identity and gives the agent's MCP
// client a local MCP endpoint that forwards to a remote gateway over mutual
// TLS 1.3.
//
// Two local endpoints are offered:
//
//   - [Connector.ServeStdio] speaks the MCP stdio transport (newline-delimited
//     JSON-RPC) on a reader and a writer, so `agentmesh connect SERVICE` can be
//     the command of an MCP client configuration. The connector is then the
//     Streamable HTTP client towards the gateway: it POSTs every message,
//     relays JSON and SSE responses, keeps the session id and protocol version,
//     opens the standalone GET stream for server-initiated messages and
//     deletes the session when the agent goes away.
//   - [Connector.ServeListener] serves Streamable HTTP on a loopback listener
//     (see [Listen]) and forwards each request as a streaming reverse proxy.
//
// # Threat model
//
// The connector protects the agent's identity and the local endpoint; the
// gateway, not the connector, enforces policy.
//
//   - The mTLS identity is the only credential sent to a gateway. Authorization
//     and Cookie headers (and every other header not on an explicit allow
//     list) from the agent are dropped, so a token meant for somebody else can
//     never leak through the mesh.
//   - The HTTP endpoint listens on loopback only; [Listen] and
//     [Connector.ServeListener] refuse anything else. Because any web page the
//     agent's user opens can make the browser send requests to 127.0.0.1,
//     requests whose Host is not a loopback name with the listener's port, or
//     whose Origin (when present) is not a loopback origin, are refused with
//     403 (DNS rebinding protection).
//   - The gateway is reached only over https with the node's TLS
//     configuration, TLS 1.3 at least; a configuration that would skip server
//     verification without a verifier of its own is refused.
//   - Local processes that can reach the loopback port can use the agent's
//     identity; that is the same trust as running `agentmesh connect` itself.
//     Use stdio mode where that matters.
//   - Gateway replies are relayed, never interpreted beyond what routing needs
//     (message ids, the negotiated protocol version), so a JSON-RPC error from
//     the gateway (for instance a policy denial) reaches the agent unchanged.
//     When the gateway fails at the HTTP level the request is answered with a
//     JSON-RPC error ([CodeGatewayHTTPError], [CodeGatewayUnreachable]) so the
//     agent never hangs.
package connector
