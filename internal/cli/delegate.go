package cli

import (
	"context"
	"flag"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/nodestate"
)

func init() {
	register(&command{
		name:  "delegate",
		usage: "--to agent:NAME --ttl DURATION [--tools SERVICE/TOOL,...] [--from ID] --state DIR [--json] | list|revoke ...",
		short: "let an agent act on your behalf, list and revoke delegations",
		long: `Without a subcommand, delegate lets the agent node NAME act for you until --ttl has passed
(1m to 24h): --state is your login state ('agentmesh login'). The coordinator signs a delegation
bound to that agent's certificate, and the agent's connector presents it with every call
('agentmesh connect SERVICE --on-behalf-of EMAIL'). --tools narrows it to SERVICE/TOOL entries
(TOOL a glob, as in policy grants); each must name tools the coordinator knows and you may call
under the policy, or it is refused (delegation_exceeds_grantor).

An agent holding a delegation passes it on to a sub-agent with its own node state and --from ID:
no wider (its tools within the delegation's) and no longer than the one it holds, and at most four
links from you.

Examples:
  agentmesh delegate --to agent:helper --ttl 1h --tools files/read_file,files/list_* --state ~/.agentmesh/me
  agentmesh delegate --to agent:summariser --ttl 30m --from 5f0c… --state ./helper
  agentmesh delegate list --state ~/.agentmesh/me
  agentmesh delegate revoke 5f0c… --state ~/.agentmesh/me`,
		subs: []*subcommand{
			{name: "", usage: "--to agent:NAME --ttl DURATION [--tools SERVICE/TOOL,...] [--from ID] --state DIR [--json]",
				short: "give an agent a delegation", flags: delegateIssue},
			{name: "list", usage: "[--json]",
				short: "list delegations: yours (an admin: all; an agent node: those it holds or gave)",
				flags: delegateList},
			{name: "revoke", usage: "ID [--json]",
				short: "revoke a delegation and every delegation made from it (its person or an admin)",
				flags: delegateRevoke},
		},
	})
	register(&command{
		name:  "users",
		usage: "revoke|restore EMAIL [flags]",
		short: "revoke and restore people signed in through single sign-on (admin)",
		long: `revoke ends a person's logins, revokes every delegation they are the root of (gateways refuse
them within the netmap's push bound) and refuses their sign-ins, --sso joins and delegations
until restore.

Examples:
  agentmesh users revoke bob@example.com --state ./mesh/admin
  agentmesh users restore bob@example.com --state ./mesh/admin`,
		subs: []*subcommand{
			{name: "revoke", usage: "EMAIL [--json]", short: "revoke a person: their logins and delegations", flags: usersRevoke},
			{name: "restore", usage: "EMAIL", short: "let a revoked person sign in and delegate again", flags: usersRestore},
		},
	})
}

// personOrNodeClient opens a login state or a node's state. A node's
// certificate is renewed when due; a login's is not renewable (sign in
// again).
func personOrNodeClient(ctx context.Context, dir string) (*controlclient.Client, error) {
	if err := needState(dir); err != nil {
		return nil, err
	}
	d, err := nodestate.Open(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := d.Config()
	if err != nil {
		return nil, err
	}
	if cfg.Kind != identity.KindUser {
		return adminClient(ctx, dir)
	}
	return controlclient.New(d, controlclient.Options{})
}

func delegationCall(ctx context.Context, dir, method, path string, in, out any) error {
	cl, err := personOrNodeClient(ctx, dir)
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.Call(ctx, method, path, in, out)
}

func delegateIssue(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	to := fs.String("to", "", "the agent node to act for you, `agent:NAME`")
	ttl := fs.Duration("ttl", 0, "how long the delegation is valid, 1m to 24h (`DURATION`)")
	tools := fs.String("tools", "", "comma-separated `SERVICE/TOOL` entries it is narrowed to (TOOL a glob; default: every tool)")
	from := fs.String("from", "", "sub-delegate from the delegation `ID` this agent node (--state) holds")
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		name, ok := strings.CutPrefix(*to, "agent:")
		if !ok {
			return usagef("--to agent:NAME is required")
		}
		if _, err := identity.ParseName(name); err != nil {
			return usagef("--to: %v", err)
		}
		if *ttl <= 0 {
			return usagef("--ttl is required: how long the agent may act for you (1m to 24h)")
		}
		req := controlapi.DelegationRequest{To: name, TTL: *ttl, From: *from}
		for _, t := range strings.Split(*tools, ",") {
			if t = strings.TrimSpace(t); t != "" {
				req.Tools = append(req.Tools, t)
			}
		}
		var d controlapi.Delegation
		if err := delegationCall(ctx, *state, http.MethodPost, controlapi.PathDelegations, req, &d); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, d)
		}
		printf(env.Stdout, "%s\n", d.ID)
		printf(env.Stderr, "delegation %s: agent:%s acts for user:%s, tools [%s], depth %d, until %s\n", d.ID, d.Agent, d.User,
			strings.Join(d.Tools, ","), d.Depth, d.ExpiresAt.Local().Format(time.RFC3339))
		return nil
	}
}

func delegateList(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		var ds []controlapi.Delegation
		if err := delegationCall(ctx, *state, http.MethodGet, controlapi.PathDelegations, nil, &ds); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, ds)
		}
		var rows [][]string
		now := time.Now()
		for _, d := range ds {
			st := "live"
			switch {
			case d.RevokedAt != nil:
				st = "revoked"
			case !now.Before(d.ExpiresAt):
				st = "expired"
			}
			tools := strings.Join(d.Tools, ",")
			if tools == "" {
				tools = "*"
			}
			rows = append(rows, []string{d.ID, d.User, d.Agent, d.Grantor, strconv.Itoa(d.Depth), tools, d.ExpiresAt.Local().Format(time.RFC3339), st})
		}
		return printTable(env.Stdout, "ID\tUSER\tAGENT\tGRANTOR\tDEPTH\tTOOLS\tEXPIRES\tSTATE", rows)
	}
}

func delegateRevoke(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "ID"); err != nil {
			return err
		}
		var res controlapi.RevokeResult
		if err := delegationCall(ctx, *state, http.MethodPost, controlapi.PathDelegations+"/"+url.PathEscape(pos[0])+"/revoke", nil, &res); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, res)
		}
		printf(env.Stdout, "revoked %d delegation(s): %s\n", len(res.Revoked), strings.Join(res.Revoked, " "))
		return nil
	}
}

func userArg(pos []string) (identity.User, error) {
	if err := wantArgs(pos, "EMAIL"); err != nil {
		return "", err
	}
	u, err := identity.ParseUser(strings.TrimPrefix(pos[0], "user:"))
	if err != nil {
		return "", usagef("%v", err)
	}
	return u, nil
}

func usersRevoke(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		u, err := userArg(pos)
		if err != nil {
			return err
		}
		var res controlapi.RevokeResult
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathUsers+"/"+url.PathEscape(string(u))+"/revoke", nil, &res); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, res)
		}
		printf(env.Stdout, "revoked %s: %d login(s) ended, %d delegation(s) revoked\n", u.Selector(), res.Logins, len(res.Revoked))
		return nil
	}
}

func usersRestore(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	return func(ctx context.Context, pos []string) error {
		u, err := userArg(pos)
		if err != nil {
			return err
		}
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathUsers+"/"+url.PathEscape(string(u))+"/restore", nil, nil); err != nil {
			return err
		}
		printf(env.Stdout, "restored %s\n", u.Selector())
		return nil
	}
}
