package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/nodestate"
)

// Node names of the mesh.
const (
	toolName  = "bench-echo"
	agentName = "bench-agent"
)

// benchPolicy grants the agent the upstream's tools and resources. %d makes
// every apply a new document.
const benchPolicy = `{
  // agentmesh bench, apply %d
  "grants": [
    { "src": ["agent:bench-agent"], "dst": ["tool:bench-echo"], "tools": ["echo", "work"], "resources": ["bench://*"] },
    { "src": ["agent:bench-agent"], "dst": ["tag:bench-fleet"], "tools": ["echo"] },
  ],
}`

// mesh is an in-process coordinator with the nodes of the bench.
type mesh struct {
	co      *coordinator.Coordinator
	admin   *controlclient.Client
	applies int
}

func (r *runner) startMesh(ctx context.Context) (string, error) {
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(r.dir, "coordinator"), Listen: "127.0.0.1:0",
		TrustDomain: "bench.agentmesh", Logger: r.log,
		// Every node of the bench runs on this one host: the per-source
		// bounds, a defence against floods, would measure themselves (the
		// join rate, and a hundred gateways handshaking at once).
		Limits: coordinator.Limits{JoinRate: 1e9, JoinBurst: 1 << 30,
			Conn: connlimit.Config{MaxHandshaking: 4096, MaxHandshakingPerSource: 4096}}})
	if err != nil {
		return "", err
	}
	r.onStop(func() { co.Close() })
	m := &mesh{co: co}
	r.mesh = m
	if m.admin, err = r.client(co.AdminDir()); err != nil {
		return "", err
	}
	for _, n := range []struct{ name, kind string }{{toolName, "tool"}, {agentName, "agent"}} {
		if err := r.join(ctx, n.name, n.kind, nil); err != nil {
			return "", err
		}
	}
	if _, err := m.apply(ctx); err != nil {
		return "", fmt.Errorf("policy apply: %w", err)
	}
	// The gateway, as 'agentmesh serve --upstream URL' runs it.
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	gctx, cancel := context.WithCancel(ctx)
	r.goStop(func() {
		errc <- r.cfg.Components.Gateway(gctx, filepath.Join(r.dir, toolName), r.up.url, func(a string) { ready <- a })
	})
	r.onStop(cancel)
	var gwAddr string
	select {
	case gwAddr = <-ready:
	case err := <-errc:
		return "", fmt.Errorf("gateway: %w", err)
	case <-time.After(30 * time.Second):
		return "", errors.New("gateway did not start within 30s")
	}
	if err := m.waitAddr(ctx, toolName, gwAddr); err != nil {
		return "", err
	}
	// The connector, as 'agentmesh connect bench-echo --listen' runs it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	url := "http://" + ln.Addr().String() + "/mcp"
	cctx, ccancel := context.WithCancel(ctx)
	r.goStop(func() {
		if err := r.cfg.Components.Connector(cctx, filepath.Join(r.dir, agentName), toolName, ln); err != nil {
			r.log.Error("bench: connector", "err", err)
		}
	})
	r.onStop(ccancel)
	return url, nil
}

// waitAddr waits until the coordinator's netmap holds the gateway's address,
// so connectors resolve it.
func (m *mesh) waitAddr(ctx context.Context, name, addr string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if n, ok := m.co.Netmap().Node(identity.Name(name)); ok && slices.Contains(n.Addrs, addr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("the address of %s did not reach the coordinator", name)
}

func (r *runner) client(dir string) (*controlclient.Client, error) {
	sd, err := nodestate.Open(dir)
	if err != nil {
		return nil, err
	}
	cl, err := controlclient.New(sd, controlclient.Options{Logger: r.log})
	if err != nil {
		return nil, err
	}
	r.onStop(cl.Close)
	return cl, nil
}

// key creates an auth key.
func (m *mesh) key(ctx context.Context, kind string, tags []string, reusable bool) (string, error) {
	if tags == nil {
		tags = []string{}
	}
	var resp controlapi.KeyCreateResponse
	err := m.admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: kind, Tags: tags, Reusable: reusable}, &resp)
	return resp.Key, err
}

// join joins a node named name into DIR/name.
func (r *runner) join(ctx context.Context, name, kind string, tags []string) error {
	key, err := r.mesh.key(ctx, kind, tags, false)
	if err != nil {
		return fmt.Errorf("key for %s: %w", name, err)
	}
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key, Name: name, State: filepath.Join(r.dir, name)}); err != nil {
		return fmt.Errorf("join %s: %w", name, err)
	}
	return nil
}

// apply applies a new version of the bench policy and returns its version.
func (m *mesh) apply(ctx context.Context) (int64, error) {
	m.applies++
	var pv controlapi.PolicyVersion
	err := m.admin.Call(ctx, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: fmt.Sprintf(benchPolicy, m.applies)}, &pv)
	return pv.Version, err
}

// start starts everything the scenarios share.
func (r *runner) start(ctx context.Context) error {
	if err := r.startUpstream(pick(r.cfg.Quick, 1<<20, 10<<20)); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	p, err := newChainPKI(r.dir)
	if err != nil {
		return fmt.Errorf("chain certificates: %w", err)
	}
	hop, chain, err := r.startProxies(p)
	if err != nil {
		return err
	}
	ngx, why := r.startNginx(ctx, p)
	am, err := r.startMesh(ctx)
	if err != nil {
		return fmt.Errorf("mesh: %w", err)
	}
	r.columns = []column{
		{name: ColDirect, url: r.up.url},
		{name: ColHTTPUtil, url: hop},
		{name: ColGoChain, url: chain},
		{name: ColNginx, url: ngx, why: why},
		{name: ColAgentmesh, url: am},
	}
	// Check every path once before measuring anything.
	for i := range r.columns {
		c := &r.columns[i]
		c.hc = newHTTPClient()
		r.onStop(c.hc.CloseIdleConnections)
		if c.url == "" {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, err := c.connect(cctx, nil)
		if err == nil {
			err = callEcho(cctx, s, "hello")
			s.Close()
		}
		cancel()
		if err != nil {
			if c.name == ColNginx {
				c.url, c.why = "", "nginx chain failed its first call: "+err.Error()
				continue
			}
			return fmt.Errorf("first call through %s: %w", c.name, err)
		}
	}
	return nil
}
