// Package bench measures agentmesh as a whole system on loopback: an
// upstream MCP server (MCP Go SDK, tools echo and work, one large
// resource), reached directly and through every kind of proxy chain that
// shows where the cost goes:
//
//	direct      the SDK client talks to the upstream
//	httputil    one plain net/http/httputil reverse-proxy hop
//	go-chain    two Go httputil hops joined by TLS 1.3 with client certificates
//	nginx-chain the same two hops built from nginx, if installed
//	agentmesh   connector -> mTLS -> gateway (policy per message, audit) -> upstream
//	library     the bench's client dials with the library agent's rule (engine.Node.Dial)
//	            straight to a tool server that serves the upstream's handler with the
//	            gateway's enforcement in its own process (engine.Node.Serve): no proxy
//
// The default layout is as deployed: every component is an OS process of
// its own. The coordinator, the gateway and the connector are the
// agentmesh binary run as the README runs it ('agentmesh coordinator',
// 'agentmesh serve --upstream', 'agentmesh connect --listen', each telling
// it serves with --ready-fd), nodes joined with auth keys and the policy
// applied through the admin API. The upstream, each Go proxy hop and the
// library server are the same binary in a hidden role (RoleEnv, RunRole),
// so every other column ends at one shared upstream process; nginx is nginx; the client is the
// bench process. Children run in process groups of their own, are
// stopped on every exit path and, on Linux, die with the bench
// (Pdeathsig). The in-process layout (LayoutInProcess) runs the same
// engine functions in the bench process instead (Components, supplied by
// the CLI, so this package does not import it): a labelled breakdown
// without the cost of crossing processes. The control-plane scenarios
// (policy, join, audit) use an in-process coordinator in both layouts.
//
// Every scenario alternates its columns in rounds, so drift of the machine
// (other processes, thermal state) spreads over all of them, and prints the
// ratios from the same run. Run returns a Report that prints as text or
// JSON. Everything listens on 127.0.0.1:0, every loop is bounded by a count
// and a deadline, and everything started is stopped before Run returns.
// Scenarios are registered in Scenarios and columns in columnDefs: one
// line each.
//
// Not security code: it trusts its own child processes and writes throwaway
// keys to a temporary directory that it removes.
package bench
