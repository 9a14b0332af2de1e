// Package bench measures agentmesh as a whole system on loopback: an
// upstream MCP server (MCP Go SDK, tools echo and work, one large
// resource), reached directly and through every kind of proxy chain that
// shows where the cost goes:
//
//	direct      the SDK client talks to the upstream
//	httputil    one plain net/http/httputil reverse-proxy hop
//	go-chain    two Go httputil hops joined by TLS 1.3 with client certificates
//	nginx-chain the same two hops built from nginx (a child process), if installed
//	agentmesh   connector -> mTLS -> gateway (policy per message, audit) -> upstream
//
// The agentmesh column is the product's own wiring: a coordinator started in
// process, nodes joined with auth keys, a policy applied through the admin
// API, and the gateway and connector run by the functions behind
// 'agentmesh serve' and 'agentmesh connect' (Components, supplied by the
// CLI, so this package does not import it).
//
// Every scenario alternates its columns in rounds, so drift of the machine
// (other processes, thermal state) spreads over all of them, and prints the
// ratios from the same run. Run returns a Report that prints as text or
// JSON. Everything listens on 127.0.0.1:0, every loop is bounded by a count
// and a deadline, and everything started is stopped before Run returns.
//
// Not security code: it trusts its own child processes and writes throwaway
// keys to a temporary directory that it removes.
package bench
