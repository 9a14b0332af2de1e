package cli

import (
	"context"

	"github.com/agentmesh/agentmesh/internal/controlclient"
)

func init() {
	register(&command{
		name:  "join",
		usage: "--authkey KEY --name NAME [--kind KIND] --state DIR",
		short: "join the mesh: create this node's key and get its certificate",
		long: `The private key is created in DIR (node.key, mode 0600) and never leaves it. The
coordinator is authenticated by the CA fingerprint pinned in the auth key before anything is sent.

Examples:
  agentmesh join --authkey "$KEY" --name payments-db --state ./payments
  AGENTMESH_STATE=./fraud agentmesh join --authkey "$KEY" --name fraud-detector`,
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
	id, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: *key, Name: *name, Kind: *kind, State: *state})
	if err != nil {
		return err
	}
	printf(env.Stdout, "joined as %s (state in %s)\n", id, *state)
	return nil
}
