package cli

import (
	"context"
	"flag"
	"net/http"
	"net/url"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/termtext"
)

func init() {
	register(&command{
		name:  "approvals",
		usage: "list|approve|deny [ID] [flags]",
		short: "list, approve and deny tool calls held for approval (admin)",
		long: `A grant with "approval": "group:NAME" holds each matching tools/call at the gateway until a
member of that group (an admin node named admin:NAME in the group, or carrying one of its tags)
approves or denies it here. See README "Approval holds".

Examples:
  agentmesh approvals list --state ./mesh/admin
  agentmesh approvals approve 3f2a9c0d1e4b5a67 --state ./mesh/admin
  agentmesh approvals deny 3f2a9c0d1e4b5a67 --reason freeze --state ./mesh/admin`,
		subs: []*subcommand{
			{name: "list", usage: "[--all] [--json]", short: "list the calls waiting for approval (--all: recent ones of every status too)", flags: approvalsList},
			{name: "approve", usage: "ID [--json]", short: "let a held call proceed", flags: approvalsApprove},
			{name: "deny", usage: "ID [--reason TEXT] [--json]", short: "refuse a held call (approval_denied)", flags: approvalsDeny},
		},
	})
}

func approvalsList(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	all := fs.Bool("all", false, "also list decided, withdrawn and timed-out approvals (newest first)")
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		path := controlapi.PathApprovals
		if *all {
			path += "?all=1"
		}
		var list []controlapi.Approval
		if err := adminCall(ctx, *state, http.MethodGet, path, nil, &list); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, list)
		}
		var rows [][]string
		for _, a := range list {
			rows = append(rows, []string{a.ID, a.Status, a.Caller, a.Tool, a.Gateway, a.Group, a.ExpiresAt.Local().Format(time.RFC3339), a.DecidedBy})
		}
		return printTable(env.Stdout, "ID\tSTATUS\tCALLER\tTOOL\tGATEWAY\tGROUP\tEXPIRES\tDECIDED BY", rows)
	}
}

func approvalsApprove(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	return approvalsDecide(fs, env, "approve", nil)
}

func approvalsDeny(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	why := fs.String("reason", "", "`TEXT` recorded with the denial and shown in the audit trail")
	return approvalsDecide(fs, env, "deny", why)
}

func approvalsDecide(fs *flag.FlagSet, env Env, verb string, why *string) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "ID"); err != nil {
			return err
		}
		var req controlapi.ApprovalDecision
		if why != nil {
			if len(*why) > controlapi.MaxApprovalNote {
				return usagef("--reason: at most %d bytes", controlapi.MaxApprovalNote)
			}
			req.Reason = *why
		}
		var a controlapi.Approval
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathApprovals+"/"+url.PathEscape(pos[0])+"/"+verb, req, &a); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, a)
		}
		printf(env.Stdout, "%s %s: %s calling %s at %s\n", a.Status, termtext.Escape(a.ID), termtext.Escape(a.Caller),
			termtext.Escape(a.Tool), termtext.Escape(a.Gateway))
		return nil
	}
}
