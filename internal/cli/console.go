package cli

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/agentmesh/agentmesh/internal/console"
)

func init() {
	register(&command{
		name:  "console",
		usage: "[--listen ADDR] [--state DIR] [-v]",
		short: "serve the web console on loopback (admin)",
		long: `Serves the web console (overview, nodes, services, policy, live audit, denials) on a loopback
address, talking to the coordinator with the admin identity in --state. It prints a one-time login
URL: open it in a browser on this machine; it logs that browser in with a session cookie and is
spent. Start the console again for a new one. Non-loopback addresses are refused.

Examples:
  agentmesh console --state ./mesh/admin
  agentmesh console --listen 127.0.0.1:0 --state ./mesh/admin`,
		run: runConsole,
	})
}

func runConsole(ctx context.Context, env Env, args []string) error {
	fs := newFlags(commands["console"], env)
	listen := fs.String("listen", console.DefaultListen, "loopback `ADDR` to serve on (port 0: a free one)")
	state := stateFlag(fs, env)
	verbose := fs.Bool("v", false, "log what the console does to stderr")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos); err != nil {
		return err
	}
	cl, err := adminClient(ctx, *state)
	if err != nil {
		return err
	}
	defer cl.Close()
	c, err := console.Listen(console.Config{Admin: cl, Listen: *listen, Logger: newLogger(env, *verbose, slog.LevelWarn)})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "agentmesh console on %s (admin %s)\n", c.URL(), cl.ID())
	fmt.Fprintf(env.Stdout, "Open this URL in a browser on this machine to log in; it works once:\n\n    %s\n\n", c.LoginURL())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Serve(gctx) })
	// The console outlives a certificate: renew it as a node does.
	g.Go(func() error { return cl.RunRenewal(gctx, nil, nil) })
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}
