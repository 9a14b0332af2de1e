package cli

import (
	"context"
	"flag"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
)

func init() {
	register(&command{
		name:  "nodes",
		usage: "list|tag|revoke [NAME] [flags]",
		short: "list, tag and revoke nodes (admin)",
		long: `Examples:
  agentmesh nodes list --state ./mesh/admin
  agentmesh nodes tag fraud-detector --tags tag:fraud,tag:prod
  agentmesh nodes revoke fraud-detector`,
		subs: []*subcommand{
			{name: "list", usage: "[--all] [--json]", short: "list the registered nodes", flags: nodesList},
			{name: "tag", usage: "NAME --tags tag:a,tag:b", short: "replace the node's tags; takes effect live", flags: nodesTag},
			{name: "revoke", usage: "NAME", short: "the node can no longer renew, and gateways cut it off", flags: nodesRevoke},
		},
	})
}

func nodesList(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	all := fs.Bool("all", false, "include revoked nodes")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		var nodes []controlapi.NodeInfo
		if err := adminCall(ctx, *state, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
			return err
		}
		if !*all {
			nodes = slices.DeleteFunc(nodes, func(n controlapi.NodeInfo) bool { return n.Status == "revoked" })
		}
		if *asJSON {
			return printJSON(env.Stdout, nodes)
		}
		var rows [][]string
		now := time.Now()
		for _, n := range nodes {
			seen := "-"
			if !n.LastSeen.IsZero() {
				seen = now.Sub(n.LastSeen).Round(time.Second).String() + " ago"
			}
			owner := "-" // joined with an auth key
			if n.Owner != "" {
				owner = "user:" + n.Owner
			}
			rows = append(rows, []string{n.Name, n.Kind, n.ID, strings.Join(n.Tags, ","), nodeState(n), strings.Join(n.Addrs, ","), seen, owner})
		}
		return printTable(env.Stdout, "NAME\tKIND\tID\tTAGS\tSTATUS\tADDRESSES\tLAST SEEN\tOWNER", rows)
	}
}

// nodeState is a node's STATUS column: revoked, or for a tool or model
// node whether it serves (the coordinator's rule, controlapi.NodeInfo's
// Serving), or active.
func nodeState(n controlapi.NodeInfo) string {
	switch {
	case n.Status != "active":
		return n.Status
	case n.Serving:
		return "serving"
	}
	if k, err := identity.ParseKind(n.Kind); err == nil && k.Serves() {
		return "not serving"
	}
	return n.Status
}

// nodeArg checks the one NAME argument of 'nodes tag' and 'nodes revoke'.
func nodeArg(pos []string) error {
	if err := wantArgs(pos, "NAME"); err != nil {
		return err
	}
	if _, err := identity.ParseName(pos[0]); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func nodesTag(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	tags := fs.String("tags", "", "comma-separated `TAGS` that replace the node's")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "NAME"); err != nil {
			return err
		}
		tl, err := identity.SplitTags(*tags)
		if err != nil {
			return usagef("%v", err)
		}
		if err := nodeArg(pos); err != nil {
			return err
		}
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathNodes+"/"+pos[0]+"/tags", controlapi.TagRequest{Tags: identity.TagStrings(tl)}, nil); err != nil {
			return err
		}
		printf(env.Stdout, "%s now has tags [%s]\n", pos[0], identity.TagStrings(tl))
		return nil
	}
}

func nodesRevoke(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	return func(ctx context.Context, pos []string) error {
		if err := nodeArg(pos); err != nil {
			return err
		}
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathNodes+"/"+pos[0]+"/revoke", nil, nil); err != nil {
			return err
		}
		printf(env.Stdout, "revoked %s\n", pos[0])
		return nil
	}
}
