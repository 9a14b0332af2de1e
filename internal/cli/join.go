package cli

import (
	"context"
	"strings"

	"github.com/agentmesh/agentmesh/internal/controlclient"
)

func init() {
	register(&command{
		name:  "join",
		usage: "--authkey KEY --name NAME [--kind KIND] [--coordinator URL[,URL...]] --state DIR | --sso (--login DIR | --coordinator URL[,URL...] --ca-fingerprint SHA256) --name NAME [--kind KIND] [--tags TAG[,TAG...]] --state DIR",
		short: "join the mesh: create this node's key and get its certificate",
		long: `The private key is created in DIR (node.key, mode 0600) and never leaves it. The
coordinator is authenticated by the CA fingerprint pinned in the auth key before anything is sent.

With several coordinators, --coordinator takes their API URLs, comma-separated, in the order to
try them; the auth key's own coordinator is tried after them. Join goes through the first that
answers, and one that does not hold the CA the key pins ends the join. The node keeps every
coordinator it knows (the netmap's list from then on) and fails over between them on its own.

With --sso, a person joins the node instead of an auth key: they sign in through the
coordinator's OpenID Connect issuer (the device flow: open the printed URL, enter the code), and
the node is recorded with them as its owner ('nodes list' shows it). The kind (default agent) and
--tags must be ones the policy's node_owners lets this person give. With --login DIR, the login
state of 'agentmesh login' says who joins (no second sign-in) and which coordinators and CA to
trust; otherwise the coordinator is authenticated by --ca-fingerprint (printed by the
coordinator at start). A client secret the issuer demands of its device client is read from
$AGENTMESH_SSO_CLIENT_SECRET.

Examples:
  agentmesh join --sso --coordinator https://coord.internal:7443 --ca-fingerprint sha256:9f86… \
      --name alice-laptop --tags tag:dev --state ./alice-agent
  agentmesh join --sso --login ~/.agentmesh/me --name alice-helper --state ./alice-helper
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
	ssoJoin := fs.Bool("sso", false, "join as yourself, signed in through the coordinator's OpenID Connect issuer, instead of with an auth key")
	fp := fs.String("ca-fingerprint", "", "with --sso: the mesh CA's `SHA256` fingerprint, as the coordinator prints it")
	tags := fs.String("tags", "", "with --sso: comma-separated `TAGS` for the node (node_owners must allow them)")
	login := fs.String("login", "", "with --sso: the login state `DIR` of 'agentmesh login', instead of signing in again")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *ssoJoin {
		if *name == "" || *login == "" && (*fp == "" || *coordinators == "") {
			return usagef("--sso needs --name, and --login DIR or --coordinator and --ca-fingerprint")
		}
		*key = ""
	} else if *key == "" || *name == "" {
		return usagef("--authkey and --name are required")
	} else if *tags != "" || *fp != "" || *login != "" {
		return usagef("--tags, --login and --ca-fingerprint go with --sso; an auth key carries its own")
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
	o := controlclient.JoinOptions{AuthKey: *key, Name: *name, Kind: *kind, State: *state, Coordinators: urls}
	if *ssoJoin {
		o.SSO = &controlclient.SSOOptions{CAFingerprint: *fp, ClientSecret: env.Getenv("AGENTMESH_SSO_CLIENT_SECRET"), Out: env.Stderr, Login: *login}
		if *tags != "" {
			o.Tags = strings.Split(*tags, ",")
		}
	}
	id, err := controlclient.Join(ctx, o)
	if err != nil {
		return err
	}
	printf(env.Stdout, "joined as %s (state in %s)\n", id, *state)
	return nil
}
