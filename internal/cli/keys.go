package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/nodestate"
)

func init() {
	register(&command{
		name:  "keys",
		usage: "create|list|revoke [flags]",
		short: "create, list and revoke auth keys (admin)",
		long: `Examples:
  agentmesh keys create --kind tool --tags tag:payments --name payments-db --state ./mesh/admin
  KEY=$(agentmesh keys create --kind agent --tags tag:fraud --reusable --expiry 1h)
  agentmesh keys revoke k1a2b3c4d5e6f`,
		subs: []*subcommand{
			{name: "create", usage: "[--kind agent|tool|model|admin] [--tags tag:a,tag:b] [--name NAME] [--reusable] [--expiry 24h] [--json]",
				short: "print one auth key, alone on stdout: all a node needs to join",
				long: `--name pins the name: the key then joins a node under that name only. Without it,
whoever holds the key may claim any free name, and grants to that name with it.`,
				flags: keysCreate},
			{name: "list", usage: "[--json]", short: "list auth keys and whether each is still usable", flags: keysList},
			{name: "revoke", usage: "ID", short: "make a key unusable for joining", flags: keysRevoke},
		},
	})
}

// adminClient opens the state directory and returns a client ready to call
// the coordinator, renewing a certificate that is due.
func adminClient(ctx context.Context, dir string) (*controlclient.Client, error) {
	if err := needState(dir); err != nil {
		return nil, err
	}
	d, err := nodestate.Open(dir)
	if err != nil {
		return nil, err
	}
	c, err := controlclient.New(d, controlclient.Options{})
	if err != nil {
		return nil, err
	}
	if err := c.RenewIfDue(ctx); err != nil {
		return nil, fmt.Errorf("renewing this identity's certificate: %w", err)
	}
	return c, nil
}

// adminCall makes one admin API call with the identity in dir: in is sent
// as JSON (nil: no body), a 2xx answer is decoded into out (nil: ignored).
func adminCall(ctx context.Context, dir, method, path string, in, out any) error {
	cl, err := adminClient(ctx, dir)
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.Call(ctx, method, path, in, out)
}

func keysCreate(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	kind := fs.String("kind", "agent", "node `KIND` the key admits: agent, tool, model or admin")
	tags := fs.String("tags", "", "comma-separated `TAGS` given to nodes that join with the key")
	reusable := fs.Bool("reusable", false, "allow more than one node to join with the key")
	expiry := fs.Duration("expiry", 24*time.Hour, "how long the key can be used")
	name := fs.String("name", "", "the only node `NAME` the key may join as (default: any free name)")
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		if _, err := identity.ParseKind(*kind); err != nil {
			return usagef("%v", err)
		}
		if *expiry <= 0 {
			// The API reads 0 as "the default": a key must not quietly live
			// 24h when the caller asked for none.
			return usagef("--expiry %v: a key must be usable for some time (1m to 90 days); leave --expiry out for 24h", *expiry)
		}
		tl, err := identity.SplitTags(*tags)
		if err != nil {
			return usagef("%v", err)
		}
		if *name != "" {
			if _, err := identity.ParseName(*name); err != nil {
				return usagef("--name: %v", err)
			}
		}
		var resp controlapi.KeyCreateResponse
		req := controlapi.KeyCreateRequest{Kind: *kind, Tags: identity.TagStrings(tl), Reusable: *reusable, Expiry: *expiry, Name: *name}
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathKeys, req, &resp); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, resp)
		}
		printf(env.Stdout, "%s\n", resp.Key)
		use := "single-use"
		if resp.Info.Reusable {
			use = "reusable"
		}
		printf(env.Stderr, "key %s: kind %s, tags [%s], name %s, %s, expires %s\n", resp.Info.ID, resp.Info.Kind,
			resp.Info.Tags, keyName(resp.Info), use, resp.Info.ExpiresAt.Local().Format(time.RFC3339))
		return nil
	}
}

func keysList(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		var keys []controlapi.KeyInfo
		if err := adminCall(ctx, *state, http.MethodGet, controlapi.PathKeys, nil, &keys); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, keys)
		}
		var rows [][]string
		now := time.Now()
		for _, k := range keys {
			st := "usable"
			switch {
			case k.Revoked:
				st = "revoked"
			case !now.Before(k.ExpiresAt):
				st = "expired"
			case !k.Reusable && k.Uses > 0:
				st = "used"
			}
			rows = append(rows, []string{k.ID, k.Kind, fmt.Sprint(k.Tags), keyName(k), strconv.FormatBool(k.Reusable), strconv.Itoa(k.Uses),
				k.ExpiresAt.Local().Format(time.RFC3339), st})
		}
		return printTable(env.Stdout, "ID\tKIND\tTAGS\tNAME\tREUSABLE\tUSES\tEXPIRES\tSTATE", rows)
	}
}

func keysRevoke(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "ID"); err != nil {
			return err
		}
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathKeys+"/"+pos[0]+"/revoke", nil, nil); err != nil {
			return err
		}
		printf(env.Stdout, "revoked key %s\n", pos[0])
		return nil
	}
}

// keyName says which name a key admits.
func keyName(k controlapi.KeyInfo) string {
	if k.Name == "" {
		return "(any free)"
	}
	return k.Name
}
