// Package engine assembles agentmesh's components into the programs users
// run: the gateway of a tool or model node, the connector of an agent, the
// coordinator. Each is one call with a configuration struct — ServeGateway,
// Connect, StartCoordinator — used alike by the command line, the demo,
// the benchmark and the end-to-end tests, so that what is tested is what
// runs.
//
// OpenNode opens a node once for a program that serves and dials with it
// as it likes — the public mesh package, agentmesh as a Go library:
// Node.Serve is the function behind ServeGateway (which is OpenNode, then
// Node.Serve), and GatewayConfig.UpstreamHandler serves an MCP server in
// the same process through the gateway (gateway.HandlerUpstream); Node.Dial
// is the connector's rule for reaching a service. So a library server
// enforces and audits exactly as 'agentmesh serve', and a library agent
// reaches services exactly as 'agentmesh connect'.
//
// Status looks at a node from its state directory, as 'agentmesh status'
// shows it: its own entry (by incarnation, never another node's of the
// same name), whether the coordinator refuses it as revoked, whether its
// gateway answers at the registered address (a TLS handshake with its own
// identity, bounded by ServingProbeTimeout), and whether it can work.
//
// The engine is where the zero-trust wiring of a node lives, not in its
// callers:
//
//   - a gateway enforces the node's current view (netmap and policy) on
//     every listener, and hands a new view to all of them at once; only
//     tool and model nodes serve, and a model node serves only an HTTP
//     upstream;
//   - a refused TLS handshake at a gateway is audited through the node's
//     refusal aggregator, so a client that hammers a listener writes
//     counts, not one event per attempt;
//   - a connector reaches a service only at the address the netmap gives
//     for it, and only if the server there presents exactly the SPIFFE ID
//     the netmap names for that service, asked again at every handshake
//     (so a service that moved is not reached under its old identity);
//   - a gateway holds its node state directory (node.Options.Audit: an
//     flock that records who holds it and where it listens), so a second
//     gateway on it is refused with the first one named; connectors do
//     not lock, so several run side by side for one agent;
//   - a connector's local TCP endpoint requires a fresh bearer token,
//     written with mode 0600 into the node's state directory and removed
//     when it stops, unless the caller opts out with NoToken;
//   - Prometheus metrics (MetricsConfig) are served on a listener of their
//     own, loopback unless AllowRemote, opened before anything else starts
//     and never on the mesh listener; a node's set goes to the node, its
//     gateways and the recorder that counts decisions from audit events.
//
// What the engine does not do is parse flags or print: it reports what it
// serves through the Ready callback (a Serving value, which the command
// line prints for people or writes as JSON for programs) and returns
// errors, each one line that says what is wrong and what to do (a busy
// port, a directory in use, a missing state), never a panic. Errors that a
// caller can fix by changing its configuration wrap ErrConfig.
//
// The tailnet mode (Tailscale's tsnet) is compiled in by default; building
// with -tags notailnet leaves it and its dependencies out, and then a
// configuration that asks for it fails with ErrNoTailnet.
package engine
