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
//   - [Connector.ServeListener] serves Streamable HTTP on a loopback or
//     private Unix socket listener (see [Listen]) and forwards each request
//     as a streaming reverse proxy.
//
// # Threat model
//
// The connector protects the agent's identity and the local endpoint; the
// gateway, not the connector, enforces policy.
//
//   - The mTLS identity is the only credential sent to a gateway. Authorization
//     and Cookie headers (and every other header that is neither on
//     mcpwire's allow list nor one of the protocol's Mcp-* headers, which the
//     gateway judges) from the agent are dropped, so a token meant for
//     somebody else can never leak through the mesh.
//   - The HTTP endpoint listens on loopback only; [Listen] and
//     [Connector.ServeListener] refuse anything else. Because any web page the
//     agent's user opens can make the browser send requests to 127.0.0.1,
//     requests whose Host is not a loopback name with the listener's port, or
//     whose Origin (when present) is not a loopback origin, are refused with
//     403 (DNS rebinding protection).
//   - The gateway is reached only over https with the node's TLS
//     configuration, TLS 1.3 at least, through the one client transport of
//     package transport: a configuration that does not check the gateway
//     with a verifier of its own is refused, and the gateway must carry the
//     SPIFFE ID the netmap names for the service (transport.ServerIs).
//   - Every local user's processes can reach a loopback port, and whoever
//     talks to the endpoint acts as the agent. A TCP endpoint therefore
//     requires a bearer token on every request (loopback.Auth; the CLI makes
//     a new one at every start and writes it with mode 0600 into the state
//     directory), unless the caller opts out explicitly; a Unix socket
//     endpoint relies on its file mode (0600, in a 0700 directory) instead.
//     Refusals (403 not_local, 401 local_auth) are JSON-RPC errors
//     [CodeLocalRefused] and never reach the gateway, and the token itself,
//     like every other agent credential, is never forwarded. Stdio mode
//     needs neither: only the process that started the connector holds its
//     pipes.
//   - Gateway replies are relayed, never interpreted beyond what routing needs
//     (message ids, the negotiated protocol version), so a JSON-RPC error from
//     the gateway (for instance a policy denial) reaches the agent unchanged.
//     When the gateway fails at the HTTP level the request is answered with a
//     JSON-RPC error ([CodeGatewayHTTPError], [CodeGatewayUnreachable]) so the
//     agent never hangs.
//
// With Config.TracerProvider set, every message sent to the gateway is a
// client span (trace.go) continuing the agent's trace context (params._meta,
// else the local request's headers), and its context goes to the gateway
// in the traceparent header and, for MCP 2026-07-28, in params._meta: the
// one case where the connector rewrites a message, and only one the strict
// decoder accepts. The HTTP endpoint then reads a POST body whole (up to
// MaxMessageBytes) instead of streaming it.
package connector
