package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
)

func init() {
	register(&command{
		name:  "services",
		usage: "[--as agent:NAME] [--service tool:NAME|model:NAME] [--state DIR] [--json]",
		short: "the service catalog: every tool and model service, its tools, and who may use them",
		long: `With an admin's state it lists every tool and model service: its gateway
addresses, whether it serves, its tools as the gateway last reported them
with their pin status (as 'agentmesh tools list' shows it); with --as, also
which services and tools that node may use under the current policy. With any
other node's state (an agent's) it shows that node's own view: only the
services it may connect to and the tools it may call there.

Resources, resource templates and prompts are not listed: gateways report
their tools only.

Examples:
  agentmesh services --state ./mesh/admin
  agentmesh services --as agent:auditor
  agentmesh services --service tool:ledger --json
  agentmesh services --state ./mesh/auditor`,
		run: runServices,
	})
}

func runServices(ctx context.Context, env Env, args []string) error {
	fs := newFlags(commands["services"], env)
	state := stateFlag(fs, env)
	as := fs.String("as", "", "show what the node `KIND:NAME` (such as agent:auditor) may use (admin)")
	service := fs.String("service", "", "only the service `KIND:NAME` (tool:NAME or model:NAME)")
	asJSON := jsonFlag(fs)
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos); err != nil {
		return err
	}
	q := url.Values{}
	if *as != "" {
		if _, _, err := identity.ParseSelector(*as); err != nil {
			return usagef("--as: %v", err)
		}
		q.Set("as", *as)
	}
	if *service != "" {
		if k, _, err := identity.ParseSelector(*service); err != nil || !k.Serves() {
			return usagef("--service %q: want tool:NAME or model:NAME", *service)
		}
		q.Set("service", *service)
	}
	path := controlapi.PathServices
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var cat controlapi.Catalog
	if err := adminCall(ctx, *state, http.MethodGet, path, nil, &cat); err != nil {
		return err
	}
	if *service != "" && len(cat.Services) == 0 {
		return fmt.Errorf("no service %s in the mesh, or none this node may reach: see 'agentmesh services'", *service)
	}
	if *asJSON {
		return printJSON(env.Stdout, cat)
	}
	printCatalog(env, cat, time.Now())
	return nil
}

func printCatalog(env Env, cat controlapi.Catalog, now time.Time) {
	who := "no identity's access shown (--as agent:NAME shows one)"
	if cat.As != "" {
		who = "access of " + cat.As
	}
	printf(env.Stdout, "policy version %d; %s\n\n", cat.PolicyVersion, who)
	if len(cat.Services) == 0 {
		fmt.Fprintln(env.Stderr, "no tool or model services: a node of kind tool or model joins, then 'agentmesh serve' registers it")
		return
	}
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	head := "SERVICE\tSTATUS\tADDRESSES\tLAST SEEN\tTOOLS"
	if cat.As != "" {
		head += "\tCONNECT"
	}
	fmt.Fprintln(tw, head)
	tools := 0
	for _, s := range cat.Services {
		seen := "-"
		if !s.LastSeen.IsZero() {
			seen = now.Sub(s.LastSeen).Round(time.Second).String() + " ago"
		}
		n := "-"
		if strings.HasPrefix(s.Service, "tool:") {
			n = strconv.Itoa(len(s.Tools))
		}
		tools += len(s.Tools)
		cols := []any{s.Service, s.Status, orDash(strings.Join(s.Addrs, ",")), seen, n}
		if s.Access != nil {
			cols = append(cols, yesNo(s.Access.Connect))
		}
		printRow(tw, cols...)
	}
	tw.Flush()
	if tools > 0 {
		fmt.Fprintln(env.Stdout)
		head := "SERVICE\tTOOL\tPIN\tHASH"
		if cat.As != "" {
			head += "\t" + strings.ToUpper(cat.As)
		}
		fmt.Fprintln(tw, head)
		for _, s := range cat.Services {
			for _, t := range s.Tools {
				cols := []any{s.Service, t.Name, t.PinStatus, shortHash(t.Hash)}
				if t.Access != nil {
					cols = append(cols, accessText(*t.Access))
				}
				printRow(tw, cols...)
			}
		}
		tw.Flush()
	} else {
		fmt.Fprintln(env.Stdout, "\nno tools reported yet: a gateway reports its tools when a client first lists them")
	}
	fmt.Fprintln(env.Stdout, "\nresources, resource templates and prompts are not listed: gateways report their tools only")
}

// printRow prints one row of a table, each column sanitised by printf.
func printRow(tw io.Writer, cols ...any) {
	printf(tw, strings.Repeat("%s\t", len(cols)-1)+"%s\n", cols...)
}

// accessText is a tool's access column: allowed (with how it is decided)
// or denied with the reason code.
func accessText(a controlapi.ToolAccess) string {
	if !a.Allowed {
		return "denied (" + a.Reason + ")"
	}
	s := "allowed"
	if a.Conditional {
		s += ", decided per call (when)"
	}
	if a.Approval != "" {
		s += ", approval by " + a.Approval
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
