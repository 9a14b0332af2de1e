package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
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
    { "src": ["agent:bench-agent-env"], "dst": ["tool:bench-echo-env"], "tools": ["echo", "work"], "resources": ["bench://*"] },
    { "src": ["agent:bench-agent-lib"], "dst": ["tool:bench-lib"], "tools": ["echo", "work"], "resources": ["bench://*"] },
  ],
}`

// mesh is a coordinator with the nodes of the bench, driven through its
// admin API.
type mesh struct {
	admin   *controlclient.Client
	applies int
	// dir holds the nodes' state directories.
	dir string
}

// controlMesh returns the in-process coordinator of the control-plane
// scenarios (policy, join, audit), started on first use. It is also the
// data plane's coordinator in the in-process layout. The coordinator
// command has no flag for the per-source join bounds, a defence against
// floods that would measure itself when every node joins from this host.
func (r *runner) controlMesh(ctx context.Context) (*mesh, error) {
	if r.mesh != nil {
		return r.mesh, nil
	}
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(r.dir, "coordinator"), Listen: "127.0.0.1:0",
		TrustDomain: "bench.agentmesh", Logger: r.log,
		Limits: coordinator.Limits{JoinRate: 1e9, JoinBurst: 1 << 30,
			Conn: connlimit.Config{MaxHandshaking: 4096, MaxHandshakingPerSource: 4096}}})
	if err != nil {
		return nil, err
	}
	r.onStop(func() { co.Close() })
	admin, err := r.client(co.AdminDir())
	if err != nil {
		return nil, err
	}
	r.mesh = &mesh{admin: admin, dir: r.dir}
	return r.mesh, nil
}

// startMesh starts the agentmesh column: a coordinator, the tool and agent
// nodes joined with auth keys, the bench policy applied through the admin
// API, a gateway in front of the upstream and a connector, and returns
// the connector's MCP endpoint. As deployed, the coordinator, gateway and
// connector are 'agentmesh coordinator', 'agentmesh serve --upstream' and
// 'agentmesh connect --listen' processes; in process, the same engine
// functions run here (Components).
func (r *runner) startMesh(ctx context.Context) (string, error) {
	return r.startPair(ctx, "", r.cfg.ChildEnv)
}

// startPair joins a tool node and an agent node named with suffix and
// starts their gateway and connector, with env for their processes.
func (r *runner) startPair(ctx context.Context, suffix string, env []string) (string, error) {
	m, err := r.dataMesh(ctx)
	if err != nil {
		return "", err
	}
	toolName, agentName := toolName+suffix, agentName+suffix
	for _, n := range []struct{ name, kind string }{{toolName, "tool"}, {agentName, "agent"}} {
		if err := m.join(ctx, n.name, n.kind, nil); err != nil {
			return "", err
		}
	}
	if _, err := m.apply(ctx); err != nil {
		return "", fmt.Errorf("policy apply: %w", err)
	}
	gwState, agState := filepath.Join(m.dir, toolName), filepath.Join(m.dir, agentName)
	if r.deployed() {
		prof := func(name string) []string {
			if r.cfg.ProfileDir == "" {
				return nil
			}
			return []string{CPUProfileEnv + "=" + filepath.Join(r.cfg.ProfileDir, name+suffix+".prof")}
		}
		// The memory scenario holds Sessions idle sessions of one agent
		// open, each with its standalone stream in flight: beyond the
		// per-peer defaults (64 sessions), which guard a gateway against
		// one looping client and are not what is measured here.
		peerCap := strconv.Itoa(r.cfg.Sessions + 256)
		_, s, err := r.startProc(ctx, "gateway"+suffix, append(prof("gateway"), env...), r.cfg.Executable,
			"serve", "--state", gwState, "--listen", "127.0.0.1:0", "--ready-fd", "3", "--upstream", r.up.url,
			"--max-sessions-per-peer", peerCap, "--max-requests-per-peer", peerCap)
		if err != nil {
			return "", err
		}
		if err := m.waitAddr(ctx, toolName, s.Addr); err != nil {
			return "", err
		}
		// The benchmark's client is the bench process; a token would cost
		// one header compare per request.
		_, s, err = r.startProc(ctx, "connector"+suffix, append(prof("connector"), env...), r.cfg.Executable,
			"connect", toolName, "--state", agState, "--listen", "127.0.0.1:0", "--no-token", "--ready-fd", "3")
		if err != nil {
			return "", err
		}
		return s.URL, nil
	}
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	gctx, cancel := context.WithCancel(ctx)
	r.goStop(func() {
		errc <- r.cfg.Components.Gateway(gctx, gwState, r.up.url, func(a string) { ready <- a })
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	url := "http://" + ln.Addr().String() + "/mcp"
	cctx, ccancel := context.WithCancel(ctx)
	r.goStop(func() {
		if err := r.cfg.Components.Connector(cctx, agState, toolName, ln); err != nil {
			r.log.Error("bench: connector", "err", err)
		}
	})
	r.onStop(ccancel)
	return url, nil
}

// dataMesh returns the coordinator of the agentmesh column: 'agentmesh
// coordinator' in a process of its own as deployed, controlMesh's
// otherwise.
func (r *runner) dataMesh(ctx context.Context) (*mesh, error) {
	if !r.deployed() {
		return r.controlMesh(ctx)
	}
	if r.dmesh != nil {
		return r.dmesh, nil
	}
	dir := filepath.Join(r.dir, "deployed")
	_, s, err := r.startProc(ctx, "coordinator", nil, r.cfg.Executable, "coordinator", "--data", filepath.Join(dir, "coordinator"),
		"--listen", "127.0.0.1:0", "--trust-domain", "bench.agentmesh", "--ready-fd", "3")
	if err != nil {
		return nil, err
	}
	if s.AdminState == "" {
		return nil, errors.New("coordinator: its ready signal names no admin state directory")
	}
	admin, err := r.client(s.AdminState)
	if err != nil {
		return nil, err
	}
	r.dmesh = &mesh{admin: admin, dir: dir}
	return r.dmesh, nil
}

// waitAddr waits until the coordinator lists the gateway's address, so
// connectors resolve it.
func (m *mesh) waitAddr(ctx context.Context, name, addr string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		var nodes []controlapi.NodeInfo
		if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
			return fmt.Errorf("node list: %w", err)
		}
		for _, n := range nodes {
			if n.Name == name && slices.Contains(n.Addrs, addr) {
				return nil
			}
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

// join joins a node named name into m.dir/name, as 'agentmesh join' does.
func (m *mesh) join(ctx context.Context, name, kind string, tags []string) error {
	key, err := m.key(ctx, kind, tags, false)
	if err != nil {
		return fmt.Errorf("key for %s: %w", name, err)
	}
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key, Name: name, State: filepath.Join(m.dir, name)}); err != nil {
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
