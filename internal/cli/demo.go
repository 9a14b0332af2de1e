package cli

import (
	"context"
	"io"
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/demo"
)

func init() {
	register(&command{
		name:  "demo",
		usage: "[--keep] [--dir DIR]",
		short: "run a whole mesh on loopback and show what agentmesh does",
		long: `Starts, in a temporary directory on free loopback ports, a coordinator, the example ledger MCP
server behind a gateway, and two agents (teller and auditor) with their connectors; applies
examples/policy.hujson; then shows an allowed call, a denied call with its reason, one tools/list
seen two ways, a live policy change with the list_changed notification it causes, a revocation
that cuts an agent off mid-session, and the audit trail with its verification.

With --keep it leaves everything running and prints how to point a real MCP client at it.

Examples:
  agentmesh demo
  go run ./cmd/agentmesh demo --keep`,
		run: runDemo,
	})
}

func runDemo(ctx context.Context, env Env, args []string) error {
	c := commands["demo"]
	fs := newFlags(c, env)
	keep := fs.Bool("keep", false, "leave the mesh running until interrupted")
	dir := fs.String("dir", "", "work in `DIR` instead of a temporary directory")
	verbose := fs.Bool("v", false, "log the components' work to stderr")
	if _, _, err := parse(fs, args); err != nil {
		return err
	}
	logOut := io.Discard
	if *verbose {
		logOut = env.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return demo.Run(ctx, demo.Config{Out: env.Stdout, Dir: *dir, Keep: *keep, Log: log})
}
