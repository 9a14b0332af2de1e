package bench

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/httpserver"
)

// Roles the bench runs in processes of their own, selected with RoleEnv.
const (
	roleUpstream = "upstream"
	roleProxy    = "proxy"
	roleLibrary  = "library"
)

// RunRole serves one hidden role of the bench binary until ctx ends: the
// upstream MCP server ("upstream") or one comparison proxy hop ("proxy"),
// configured by args (flags the bench passes). It calls ready with the
// endpoint once it serves, which the CLI writes to descriptor 3 like
// --ready-fd. Only the bench starts roles.
func RunRole(ctx context.Context, role string, args []string, ready func(engine.Serving)) error {
	fs := flag.NewFlagSet("bench "+role, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	blob := fs.Int("blob", 1<<20, "size of the upstream's large resource in bytes")
	state := fs.String("state", "", "the library server's node state directory")
	var o proxyOpts
	o.flags(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("bench %s: %w", role, err)
	}
	var hs *http.Server
	var serverTLS *tls.Config
	switch role {
	case roleLibrary:
		return serveLibrary(ctx, *state, *blob, ready)
	case roleUpstream:
		hs = &http.Server{Handler: upstreamHandler(*blob), ReadHeaderTimeout: 10 * time.Second}
	case roleProxy:
		var err error
		if hs, serverTLS, err = o.server(); err != nil {
			return fmt.Errorf("bench proxy: %w", err)
		}
	default:
		return fmt.Errorf("%w: role %q", ErrUnknownRole, role)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s := engine.Serving{Component: "bench " + role, API: "mcp", Network: "http", Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String() + "/mcp"}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
		s.Network, s.URL = "mtls", "https://"+s.Addr+"/mcp"
	}
	ready(s)
	return httpserver.Run(ctx, hs, ln)
}
