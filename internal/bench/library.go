package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// Node names of the library column.
const (
	libToolName  = "bench-lib"
	libAgentName = "bench-agent-lib"
)

// serveLibrary is the library column's server: the upstream's MCP handler
// served with the gateway's enforcement and audit in its own process, as
// mesh.Node.Serve runs it (engine.OpenNode, then Node.Serve with the
// handler as UpstreamHandler). The bench does not import the public mesh
// package (internal/layers), so it calls the engine functions that
// package is a shell over.
func serveLibrary(ctx context.Context, state string, blob int, ready func(engine.Serving)) error {
	n, err := engine.OpenNode(ctx, engine.NodeConfig{State: state, Command: "agentmesh bench library"})
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Serve(ctx, engine.GatewayConfig{Listen: "127.0.0.1:0", UpstreamHandler: upstreamHandler(blob), Ready: ready})
}

// startLibraryColumn joins a tool node and an agent node for the library
// column, starts the library server (a process of its own as deployed)
// and returns the endpoint the bench's client reaches it at, dialing with
// the library agent's rule (engine.Node.Dial): the agent's certificate,
// the service's SPIFFE ID checked at every handshake, its address from
// the netmap. No proxy is on the path.
func startLibraryColumn(ctx context.Context, r *runner) (target, error) {
	m, err := r.dataMesh(ctx)
	if err != nil {
		return target{}, err
	}
	for _, n := range []struct{ name, kind string }{{libToolName, "tool"}, {libAgentName, "agent"}} {
		if err := m.join(ctx, n.name, n.kind, nil); err != nil {
			return target{}, err
		}
	}
	if _, err := m.apply(ctx); err != nil {
		return target{}, fmt.Errorf("policy apply: %w", err)
	}
	toolState, agentState := filepath.Join(m.dir, libToolName), filepath.Join(m.dir, libAgentName)
	blob := pick(r.cfg.Quick, 1<<20, 10<<20)
	var addr string
	if r.deployed() {
		_, s, err := r.startProc(ctx, "library", []string{RoleEnv + "=" + roleLibrary}, r.cfg.Executable,
			"bench", "-state", toolState, "-blob", strconv.Itoa(blob))
		if err != nil {
			return target{}, err
		}
		addr = s.Addr
	} else {
		ready := make(chan string, 1)
		errc := make(chan error, 1)
		lctx, cancel := context.WithCancel(ctx)
		r.goStop(func() { errc <- serveLibrary(lctx, toolState, blob, func(s engine.Serving) { ready <- s.Addr }) })
		r.onStop(cancel)
		select {
		case addr = <-ready:
		case err := <-errc:
			return target{}, fmt.Errorf("library server: %w", err)
		case <-time.After(30 * time.Second):
			return target{}, errors.New("library server did not start within 30s")
		}
	}
	if err := m.waitAddr(ctx, libToolName, addr); err != nil {
		return target{}, err
	}
	agent, err := engine.OpenNode(ctx, engine.NodeConfig{State: agentState})
	if err != nil {
		return target{}, fmt.Errorf("library agent: %w", err)
	}
	r.onStop(func() { agent.Close() })
	tlsCfg, resolve, err := agent.Dial(libToolName)
	if err != nil {
		return target{}, fmt.Errorf("library agent: %w", err)
	}
	if _, err := transport.New(transport.Config{TLS: tlsCfg}); err != nil {
		return target{}, fmt.Errorf("library agent: %w", err)
	}
	return target{url: "https://" + libToolName + "/mcp", client: func() *http.Client {
		tr, _ := transport.New(transport.Config{TLS: tlsCfg}) // checked above
		return transport.Client(&libTransport{rt: tr, resolve: resolve})
	}}, nil
}

// libTransport sends each request to the service's current address, as
// the library agent's HTTP client does: resolved from the netmap at every
// request, the TLS rule checking the service's identity at every
// handshake.
type libTransport struct {
	rt      *http.Transport
	resolve func(context.Context) (string, error)
}

func (t *libTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base, err := t.resolve(req.Context())
	if err == nil {
		var u *url.URL
		if u, err = url.Parse(base); err == nil {
			out := req.Clone(req.Context())
			out.URL.Host, out.Host = u.Host, ""
			return t.rt.RoundTrip(out)
		}
	}
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, fmt.Errorf("library agent: %w", err)
}

// CloseIdleConnections lets the column's client release its connections.
func (t *libTransport) CloseIdleConnections() { t.rt.CloseIdleConnections() }
