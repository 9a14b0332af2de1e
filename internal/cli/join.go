package cli

import (
	"context"
	"strings"

	"github.com/agentmesh/agentmesh/internal/controlclient"
)

func init() {
	register(&command{
		name:  "join",
		usage: "--authkey KEY --name NAME [--kind KIND] [--coordinator URL[,URL...]] --state DIR",
		short: "join the mesh: create this node's key and get its certificate",
		long: `The private key is created in DIR (node.key, mode 0600) and never leaves it. The
coordinator is authenticated by the CA fingerprint pinned in the auth key before anything is sent.

With several coordinators, --coordinator takes their API URLs, comma-separated, in the order to
try them; the auth key's own coordinator is tried after them. Join goes through the first that
answers, and one that does not hold the CA the key pins ends the join. The node keeps every
coordinator it knows (the netmap's list from then on) and fails over between them on its own.

Examples:
  agentmesh join --authkey "$KEY" --name payments-db --state ./payments
  AGENTMESH_STATE=./fraud agentmesh join --authkey "$KEY" --name fraud-detector
  agentmesh join --authkey "$KEY" --name fraud-detector --state ./fraud \
      --coordinator https://coord-a.internal:7443,https://coord-b.internal:7443`,
		run: runJoin,
	})
}

func runJoin(ctx context.Context, env Env, args []string) error {
	c := commands["join"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	key := fs.String("authkey", env.Getenv("AGENTMESH_AUTHKEY"), "auth `KEY` from 'agentmesh keys create' (default $AGENTMESH_AUTHKEY)")
	name := fs.String("name", "", "this node's `NAME` (lower-case letters, digits, '-', '_')")
	kind := fs.String("kind", "", "node `KIND`; must be what the key allows (default: the key's kind)")
	coordinators := fs.String("coordinator", "", "comma-separated API `URLs` of coordinators to join through, tried in order before the auth key's")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *key == "" || *name == "" {
		return usagef("--authkey and --name are required")
	}
	if err := needState(*state); err != nil {
		return err
	}
	var urls []string
	if *coordinators != "" {
		for _, u := range strings.Split(*coordinators, ",") {
			urls = append(urls, strings.TrimSpace(u))
		}
	}
	id, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: *key, Name: *name, Kind: *kind, State: *state, Coordinators: urls})
	if err != nil {
		return err
	}
	printf(env.Stdout, "joined as %s (state in %s)\n", id, *state)
	return nil
}
