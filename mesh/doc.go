// Package mesh is agentmesh as a Go library: the zero-hop path. A Go
// agent dials mesh services with its own node identity, and a Go MCP
// server enforces the mesh's policy and writes its audit trail in its own
// process, so that a call between the two crosses no proxy at all (and a
// call between one of them and a connector or gateway crosses one).
//
// # Use
//
// A node joins once, with an auth key from the mesh's admin ('agentmesh
// keys create'), or with 'agentmesh join'; its state directory holds its
// private key, certificate and cached netmap:
//
//	n, err := mesh.Join(ctx, mesh.JoinOptions{AuthKey: key, Name: "fraud", State: dir})
//	n, err := mesh.Open(ctx, dir, nil) // later runs, or after 'agentmesh join'
//	defer n.Close()
//
// An agent node reaches a service by name, at https://NAME/mcp
// ([ServiceURL]), with the client [Node.HTTPClient] gives: the MCP Go
// SDK's StreamableClientTransport takes it as its HTTPClient.
//
//	t := &mcp.StreamableClientTransport{Endpoint: mesh.ServiceURL("ledger"), HTTPClient: n.HTTPClient()}
//
// A tool node serves any http.Handler — typically the SDK's
// StreamableHTTPHandler — behind the gateway's enforcement, on the node's
// mTLS listener, and announces the address to the coordinator, as
// 'agentmesh serve' does:
//
//	err := n.Serve(ctx, mcp.NewStreamableHTTPHandler(...), &mesh.ServeOptions{Listen: ":8443"})
//
// # One code path
//
// Serve is not a copy of the gateway: it is the gateway (the one that
// 'agentmesh serve' runs, through the same engine function), whose
// upstream is the handler called in-process instead of over a
// connection. Admission, the policy and its `when` conditions, list
// filtering, reason codes, JSON-RPC errors, audit events (spooled in the
// state directory and shipped to the coordinator, hash-chained there),
// caps, policy updates and revocation are therefore exactly the
// gateway's; the tests hold the two to the same table of decisions.
// Likewise the client is the connector's dialing rule, not a second one.
//
// # Threat model
//
// What the library defends, and how:
//
//   - A caller is who its certificate says, nothing else: the server
//     admits only clients with a certificate of the mesh's CA, for a node
//     that is active in its current netmap with the same incarnation;
//     headers, the Host and anything in the body are never identity.
//     Every MCP message is decided by the policy before the handler sees
//     it; the handler receives only what was allowed, byte for byte, and
//     a request the policy denies never reaches it.
//   - A revoked caller, or one the policy no longer links to the server,
//     has its connections and sessions cut when the new netmap arrives,
//     and is refused from then on. A server whose view the coordinator
//     has not confirmed for longer than a certificate lifetime admits
//     nobody (stale_netmap) until it answers again: the library fails
//     closed, as the gateway does.
//   - The client reaches a service only at the address the netmap names
//     for it, and only if the server there presents exactly the SPIFFE ID
//     the netmap names, asked again at every handshake: an address that
//     was reused by another node, a DNS name, or a forged redirect does
//     not carry the node's certificate or requests elsewhere (redirects
//     are never followed). The scheme is always mTLS, TLS 1.3.
//   - Audit is not optional: a server that cannot record a decision does
//     not answer the request (it slows down, it never drops an event).
//   - Not defended: the process itself. The handler, the agent's code and
//     the library share one address space and the node's private key; a
//     compromised process is the node. Run one node per trust boundary,
//     and keep the state directory (mode 0700) to its owner.
//
// The types of this package are all a user needs; nothing here hands out
// a type from agentmesh's internal packages.
package mesh
