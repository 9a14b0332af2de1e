package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/agentmesh/agentmesh/internal/bench"
	"github.com/agentmesh/agentmesh/internal/engine"
)

func init() {
	register(&command{
		name:  "bench",
		usage: "[SCENARIO...] [--quick] [--json] [--cpuprofile FILE]",
		short: "measure agentmesh against a direct MCP connection, Go proxies and nginx, on loopback",
		long: `Starts on loopback an upstream MCP server (MCP Go SDK), an in-process mesh (coordinator, the
gateway and connector of 'agentmesh serve' and 'agentmesh connect'), a plain httputil proxy hop,
a two-hop TLS 1.3 mTLS chain of Go proxies and, if nginx is installed, the same chain of nginx;
then runs each scenario with every path side by side, alternating them, and prints the ratios.

Scenarios: ` + strings.Join(bench.ScenarioNames(), ", ") + ` (default: all).
--quick is a smoke run that checks every path works and counts; its timings mean nothing.
The exit status is 1 if any call failed.

Examples:
  agentmesh bench
  agentmesh bench latency throughput --cpuprofile cpu.out
  agentmesh bench --quick --json
  agentmesh bench throughput --columns agentmesh --cpuprofile cpu.out`,
		run: runBench,
	})
}

func runBench(ctx context.Context, env Env, args []string) error {
	c := commands["bench"]
	fs := newFlags(c, env)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quick := fs.Bool("quick", false, "smoke run: small counts, every path once or a few times")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to `FILE`")
	gateways := fs.Int("gateways", 0, "gateways of the policy scenario (default 100, 5 with --quick)")
	sessions := fs.Int("sessions", 0, "idle sessions of the memory scenario (default 1000, 20 with --quick)")
	nginx := fs.String("nginx", "", "nginx binary `PATH` (default: nginx in PATH or /usr/sbin)")
	columns := fs.String("columns", "", "run only these comma-separated `COLUMNS` (direct, httputil, go-chain, nginx-chain, agentmesh)")
	verbose := fs.Bool("v", false, "log the components' work to stderr")
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
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var cols []string
	if *columns != "" {
		cols = strings.Split(*columns, ",")
	}
	cfg := bench.Config{
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
