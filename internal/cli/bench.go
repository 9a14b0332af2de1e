package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/agentmesh/agentmesh/internal/bench"
	"github.com/agentmesh/agentmesh/internal/engine"
)

func init() {
	register(&command{
		name:  "bench",
		usage: "[SCENARIO...] [--quick] [--json] [--layout deployed|inprocess] [--profile-dir DIR] [--cpuprofile FILE]",
		short: "measure agentmesh against a direct MCP connection, Go proxies and nginx, on loopback",
		long: `Starts on loopback, each as its own process as deployed: an upstream MCP server (MCP Go SDK),
'agentmesh coordinator', 'agentmesh serve --upstream' and 'agentmesh connect --listen' from this
binary (nodes joined with auth keys, the policy applied through the admin API), a plain httputil
proxy hop, a two-hop TLS 1.3 mTLS chain of Go proxies and, if nginx is installed, the same chain
of nginx; the client is this process. Then it runs each scenario with every path side by side,
alternating them, and prints the ratios. --layout inprocess runs the mesh, upstream and Go
proxies inside this process instead: a breakdown without the cost of crossing processes.
The policy, join and audit scenarios use an in-process coordinator in both layouts.
--profile-dir DIR writes CPU profiles of the gateway and connector processes to DIR.

Scenarios: ` + strings.Join(bench.ScenarioNames(), ", ") + ` (default: all).
--quick is a smoke run that checks every path works and counts; its timings mean nothing.
The exit status is 1 if any call failed.

Examples:
  agentmesh bench
  agentmesh bench latency throughput --cpuprofile cpu.out
  agentmesh bench --quick --json
  agentmesh bench latency throughput --columns nginx-chain,agentmesh --profile-dir /tmp/prof
  agentmesh bench --layout inprocess throughput --columns agentmesh --cpuprofile cpu.out`,
		run: runBench,
	})
}

func runBench(ctx context.Context, env Env, args []string) error {
	if role := env.Getenv(bench.RoleEnv); role != "" {
		// A process the bench started for its upstream or a proxy hop.
		announce, closeReady, err := readySignal(env, 3)
		if err != nil {
			return err
		}
		defer closeReady()
		return bench.RunRole(ctx, role, args, announce)
	}
	c := commands["bench"]
	fs := newFlags(c, env)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quick := fs.Bool("quick", false, "smoke run: small counts, every path once or a few times")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the bench process (client; everything with --layout inprocess) to `FILE`")
	layout := fs.String("layout", bench.LayoutDeployed, "`LAYOUT`: deployed (one process per component) or inprocess (a breakdown)")
	profDir := fs.String("profile-dir", "", "write CPU profiles of the gateway and connector processes to `DIR` (deployed layout)")
	gateways := fs.Int("gateways", 0, "gateways of the policy scenario (default 100, 5 with --quick)")
	sessions := fs.Int("sessions", 0, "idle sessions of the memory scenario (default 1000, 20 with --quick)")
	nginx := fs.String("nginx", "", "nginx binary `PATH` (default: nginx in PATH or /usr/sbin)")
	columns := fs.String("columns", "", "run only these comma-separated `COLUMNS` ("+strings.Join(bench.ColumnNames(), ", ")+"; direct always runs)")
	verbose := fs.Bool("v", false, "log the components' work to stderr")
	workDir := fs.String("dir", "", "work `DIR` (state, keys, each process's log in DIR/log), kept afterwards (default: a temporary directory, removed)")
	var childEnv, compareEnv listFlag
	fs.Var(&childEnv, "env", "extra `NAME=VALUE` for the gateway and connector processes (repeatable; deployed layout)")
	fs.Var(&compareEnv, "compare-env", "also run column agentmesh+env: a second gateway and connector with this extra `NAME=VALUE` (repeatable; deployed layout)")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	for _, p := range pos {
		if !contains(bench.ScenarioNames(), p) {
			return usagef("unknown scenario %q (one of %s)", p, strings.Join(bench.ScenarioNames(), ", "))
		}
	}
	logOut := io.Discard
	if *verbose {
		logOut = env.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var cols []string
	if *columns != "" {
		cols = strings.Split(*columns, ",")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: the agentmesh binary: %w", err)
	}
	if *profDir != "" {
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			return fmt.Errorf("profile-dir: %w", err)
		}
	}
	cfg := bench.Config{
		Layout: *layout, Executable: exe, Dir: *workDir, ProfileDir: *profDir, ChildEnv: childEnv, CompareEnv: compareEnv,
		Columns: cols, Scenarios: pos, Quick: *quick, Gateways: *gateways, Sessions: *sessions, NginxPath: *nginx,
		Progress: env.Stderr, Logger: log,
		Components: bench.Components{
			Gateway: func(ctx context.Context, state, upstream string, ready func(string)) error {
				return engine.ServeGateway(ctx, engine.GatewayConfig{State: state, Listen: "127.0.0.1:0", UpstreamURL: upstream,
					Logger: log, Ready: func(s engine.Serving) { ready(s.Addr) }})
			},
			Connector: func(ctx context.Context, state, service string, ln net.Listener) error {
				// The benchmark's clients are its own processes' goroutines;
				// a token would cost one header compare per request.
				return engine.Connect(ctx, engine.ConnectConfig{State: state, Service: service, Listener: ln, NoToken: true, Logger: log})
			},
		},
	}
	rep, err := bench.Run(ctx, cfg)
	if rep != nil {
		rep.Command = "agentmesh bench " + strings.Join(args, " ")
		if *asJSON {
			rep.WriteJSON(env.Stdout)
		} else {
			rep.WriteText(env.Stdout)
		}
	}
	if err != nil {
		if rep != nil && errors.Is(err, bench.ErrLostCalls) {
			fmt.Fprintf(env.Stderr, "agentmesh bench: %v\n", err)
			return errSilent
		}
		return err
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// listFlag collects a repeated flag's values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
