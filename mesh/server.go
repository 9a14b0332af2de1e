package mesh

import (
	"context"
	"net/http"

	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/gateway"
)

// ServeOptions configure Serve; nil is the zero value, which is usable.
type ServeOptions struct {
	// Listen is the mTLS listener's address; "" is 127.0.0.1:0 (loopback,
	// a free port), so nothing is exposed by surprise.
	Listen string
	// Advertise is the address registered with the coordinator, where
	// agents reach this server; "" is the listener's own address.
	Advertise string
	// MaxMessageBytes bounds one JSON-RPC message from a client; 0 is
	// 4 MiB.
	MaxMessageBytes int
	// RecordArgsHash stores the SHA-256 of tool call arguments in audit
	// events.
	RecordArgsHash bool
	// Ready, when set, is called with the server's URL
	// (https://ADDR/mcp) once it accepts connections, and before its
	// address is registered.
	Ready func(url string)
}

// Serve serves handler, an MCP server over Streamable HTTP at /mcp (such
// as the MCP Go SDK's StreamableHTTPHandler), behind the gateway's
// enforcement and audit, on this node's mTLS listener, and registers the
// listener's address with the coordinator (retrying while it is away;
// the server serves from the node's cached view meanwhile), until ctx
// ends. It is what 'agentmesh serve' runs, with handler as its upstream,
// called in-process: see the package documentation. Only a tool node
// serves. It returns nil when ctx ends, or the first failure, after
// everything it started has stopped (handler calls included).
//
// Serve may be called again after it returned; two at once on one node
// listen on two addresses, and the coordinator keeps the one registered
// last.
func (n *Node) Serve(ctx context.Context, handler http.Handler, o *ServeOptions) error {
	if o == nil {
		o = &ServeOptions{}
	}
	listen := o.Listen
	if listen == "" {
		listen = engine.DefaultGatewayListen
	}
	cfg := engine.GatewayConfig{
		Listen: listen, Advertise: o.Advertise, UpstreamHandler: handler,
		MaxMessageBytes: o.MaxMessageBytes, RecordArgsHash: o.RecordArgsHash, Logger: n.log,
	}
	if o.Ready != nil {
		cfg.Ready = func(s engine.Serving) { o.Ready(s.URL) }
	}
	return wrapConfig(n.e.Serve(ctx, cfg))
}

// Caller is the mesh node a request to a served handler comes from, as
// the gateway admitted it: its certificate, checked against the current
// netmap. Tags come from the netmap, never from the caller.
type Caller struct {
	// ID is the caller's SPIFFE ID, as the audit trail names it.
	ID string
	// Name, Kind and Tags are the node's, as the policy matched them.
	Name, Kind string
	Tags       []string
}

// CallerOf returns who sent r, a request that the handler given to Serve
// receives (or one derived from it, with its context); false for any
// other request, and for the DELETE with which the gateway itself ends a
// session it cut (a revoked caller's, an idle one). A handler may use it for what the policy cannot say
// (rows a caller may see), never instead of the policy: by the time the
// handler runs, the policy has allowed the message.
func CallerOf(r *http.Request) (Caller, bool) {
	c, ok := gateway.CallerOf(r.Context())
	if !ok {
		return Caller{}, false
	}
	out := Caller{ID: c.Src, Name: string(c.Node.Name), Kind: string(c.Node.Kind)}
	for _, t := range c.Node.Tags {
		out.Tags = append(out.Tags, string(t))
	}
	return out, true
}
