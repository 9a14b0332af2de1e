package cli

import (
	"context"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"agentmesh/internal/controlapi"
	"agentmesh/internal/identity"
)

func init() {
	register(&command{
		name:  "nodes",
		usage: "list|tag|revoke [NAME] [flags]",
		short: "list, tag and revoke nodes (admin)",
		long: `  nodes list [--json]
  nodes tag NAME --tags tag:a,tag:b     replaces the node's tags; takes effect live
  nodes revoke NAME                     the node can no longer renew, and gateways cut it off

Examples:
  agentmesh nodes list --state ./mesh/admin
  agentmesh nodes tag fraud-detector --tags tag:fraud,tag:prod
  agentmesh nodes revoke fraud-detector`,
		run: runNodes,
	})
}

func runNodes(ctx context.Context, env Env, args []string) error {
	c := commands["nodes"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	tags := fs.String("tags", "", "comma-separated `TAGS` for 'nodes tag'")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing subcommand: list, tag or revoke")
	}
	want := map[string]int{"list": 1, "tag": 2, "revoke": 2}
	n, ok := want[pos[0]]
	if !ok {
		return usagef("unknown subcommand %q: want list, tag or revoke", pos[0])
	}
	if len(pos) != n {
		return usagef("nodes %s takes %d argument(s)", pos[0], n-1)
	}
	var tl []identity.Tag
	if pos[0] == "tag" {
		if tl, err = identity.SplitTags(*tags); err != nil {
			return usagef("%v", err)
		}
	}
	if n == 2 {
		if _, err := identity.ParseName(pos[1]); err != nil {
			return usagef("%v", err)
		}
	}
	cl, err := adminClient(ctx, *state)
	if err != nil {
		return err
	}
	defer cl.Close()
	switch pos[0] {
	case "list":
		var nodes []controlapi.NodeInfo
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, nodes)
		}
		tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKIND\tTAGS\tSTATUS\tADDRESSES\tLAST SEEN")
		for _, n := range nodes {
			seen := "-"
			if !n.LastSeen.IsZero() {
				seen = time.Since(n.LastSeen).Round(time.Second).String() + " ago"
			}
			printf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Kind, n.Tags, n.Status, n.Addrs, seen)
		}
		return tw.Flush()
	case "tag":
		if err := cl.Call(ctx, http.MethodPost, controlapi.PathNodes+"/"+pos[1]+"/tags", controlapi.TagRequest{Tags: identity.TagStrings(tl)}, nil); err != nil {
			return err
		}
		printf(env.Stdout, "%s now has tags [%s]\n", pos[1], identity.TagStrings(tl))
	case "revoke":
		if err := cl.Call(ctx, http.MethodPost, controlapi.PathNodes+"/"+pos[1]+"/revoke", nil, nil); err != nil {
			return err
		}
		printf(env.Stdout, "revoked %s\n", pos[1])
	}
	return nil
}
