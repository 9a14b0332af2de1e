package mesh_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/mesh"
)

// childEnv makes the test binary a benchmark's server process instead
// of running tests: "direct" (toolServer over plain HTTP), "library"
// (toolServer behind mesh.Serve), "gateway" ('agentmesh serve' in front of
// an HTTP upstream) or "connector" ('agentmesh connect' on loopback).
// Arguments come in childArgs; the child prints its URL on its first
// line and serves until SIGTERM.
const (
	childEnv  = "MESH_BENCH_CHILD"
	childArgs = "MESH_BENCH_ARGS"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		if err := runChild(role, strings.Split(os.Getenv(childArgs), "\n")); err != nil {
			fmt.Fprintln(os.Stderr, role+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Every test stops what it started: servers, nodes, handler calls.
	goleak.VerifyTestMain(m)
}

func runChild(role string, args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	say := func(url string) { fmt.Println(url) }
	switch role {
	case "direct":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: toolServer()}
		go func() { <-ctx.Done(); srv.Close() }()
		say("http://" + ln.Addr().String() + "/mcp")
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			return err
		}
		return nil
	case "library":
		n, err := mesh.Open(ctx, args[0], nil)
		if err != nil {
			return err
		}
		defer n.Close()
		return n.Serve(ctx, toolServer(), &mesh.ServeOptions{Ready: say})
	case "gateway":
		return engine.ServeGateway(ctx, engine.GatewayConfig{State: args[0], Listen: "127.0.0.1:0", UpstreamURL: args[1],
			Ready: func(s engine.Serving) { say(s.URL) }})
	case "connector":
		return engine.Connect(ctx, engine.ConnectConfig{State: args[0], Service: args[1], Listen: "127.0.0.1:0", NoToken: true,
			Ready: func(s engine.Serving) { say(s.URL) }})
	}
	return fmt.Errorf("unknown role %q", role)
}

// startChild runs this test binary as role with args and returns the URL
// it prints; the process is stopped at the benchmark's cleanup.
func startChild(b *testing.B, role string, args ...string) string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+role, childArgs+"="+strings.Join(args, "\n"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("%s: no URL: %v", role, err)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(line)
}

// BenchmarkToolsCallPaths measures one tools/call (echo) on each path,
// every server in a process of its own, in alternating rounds (so that
// load from elsewhere falls on every path alike):
//
//   - direct: the client to the MCP server over plain HTTP;
//   - library: a library agent (this process) to a library server, mTLS
//     and the gateway's enforcement and audit in the server's process,
//     no proxy;
//   - two-process: the client to 'agentmesh connect' to 'agentmesh
//     serve' to the MCP server (three processes besides the client).
//
// It reports each path's p50 and p99 (µs) and, for the agentmesh paths,
// the latency they add at p50 over direct. The coordinator runs in this
// process (it is off the request path: it only receives audit batches).
//
//	go test ./mesh -run '^$' -bench ToolsCallPaths -benchtime 2000x
func BenchmarkToolsCallPaths(b *testing.B) {
	m := coordinatortest.Start(b, coordinatortest.Options{})
	m.ApplyPolicy(`{"grants": [{"src": ["agent:fraud"], "dst": ["tool:ledger-lib", "tool:ledger-gw"], "tools": ["echo"]}]}`)
	agentDir := m.Join("agent", "fraud")
	libDir, gwDir := m.Join("tool", "ledger-lib"), m.Join("tool", "ledger-gw")

	direct := startChild(b, "direct")
	startChild(b, "library", libDir)
	startChild(b, "gateway", gwDir, direct)
	connector := startChild(b, "connector", agentDir, "ledger-gw")

	ctx := context.Background()
	agent, err := mesh.Open(ctx, agentDir, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer agent.Close()
	plain := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}
	paths := []struct {
		name     string
		endpoint string
		client   *http.Client
	}{
		{"direct", direct, plain},
		{"library", mesh.ServiceURL("ledger-lib"), agent.HTTPClient()},
		{"two-process", connector, plain},
	}
	sessions := make([]*mcp.ClientSession, len(paths))
	for i, p := range paths {
		c := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil)
		cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: p.endpoint, HTTPClient: p.client, MaxRetries: -1}, nil)
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		defer cs.Close()
		sessions[i] = cs
		for range 50 { // warm up connections, pools and the JIT-less caches
			if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "warm"}}); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
		}
	}
	lat := make([][]time.Duration, len(paths))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, cs := range sessions {
			start := time.Now()
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "x"}})
			lat[j] = append(lat[j], time.Since(start))
			if err != nil || res.IsError {
				b.Fatalf("%s: %v", paths[j].name, err)
			}
		}
	}
	b.StopTimer()
	pct := func(s []time.Duration, p float64) float64 {
		s = slices.Clone(s)
		slices.Sort(s)
		return float64(s[int(p*float64(len(s)-1))].Nanoseconds()) / 1e3
	}
	base := pct(lat[0], 0.5)
	for j, p := range paths {
		b.ReportMetric(pct(lat[j], 0.5), p.name+"-p50-µs")
		b.ReportMetric(pct(lat[j], 0.99), p.name+"-p99-µs")
		if j > 0 {
			b.ReportMetric(pct(lat[j], 0.5)-base, p.name+"-added-p50-µs")
		}
	}
	b.ReportMetric(0, "ns/op") // a round is three calls: per-path figures above
}
