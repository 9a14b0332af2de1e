package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
)

const shadowUsage = "apply FILE [--strict] [--json] | status [--json] | promote [--json] | clear [--json]"

const shadowLong = `A shadow policy runs next to the active one: every gateway evaluates both on live
traffic, enforces the active one, and records in the request's audit event the shadow's
decision where the two differ. 'status' summarises those differences from the audit
trail (source, destination, target, active -> shadow decision, count, first and last
time, example event ids: 'agentmesh audit --json' shows them); 'promote' makes the
shadow the active policy (a new version, as 'policy apply' of it would) and clears the
shadow; 'clear' drops it.

Examples:
  agentmesh policy shadow apply narrower.hujson
  agentmesh policy shadow status
  agentmesh policy shadow promote`

func policyShadow(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	strict := strictFlag(fs)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if len(pos) == 0 {
			return usagef("missing verb: apply, status, promote or clear")
		}
		verb, args := pos[0], pos[1:]
		if *strict && verb != "apply" {
			return usagef("--strict applies to apply only")
		}
		switch verb {
		case "apply":
			if err := wantArgs(args, "FILE"); err != nil {
				return err
			}
			return shadowApply(ctx, env, *state, args[0], *strict, *asJSON)
		case "status":
			if err := wantArgs(args); err != nil {
				return err
			}
			var st controlapi.ShadowStatus
			if err := adminCall(ctx, *state, http.MethodGet, controlapi.PathShadowStatus, nil, &st); err != nil {
				return err
			}
			if *asJSON {
				return printJSON(env.Stdout, st)
			}
			return printShadowStatus(env, st)
		case "promote":
			if err := wantArgs(args); err != nil {
				return err
			}
			var pv controlapi.PolicyVersion
			if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathShadowPromote, struct{}{}, &pv); err != nil {
				return err
			}
			if *asJSON {
				return printJSON(env.Stdout, pv)
			}
			printf(env.Stdout, "promoted: the shadow policy is active as version %d; no shadow policy now (%s)\n", pv.Version, pv.Note)
			return nil
		case "clear":
			if err := wantArgs(args); err != nil {
				return err
			}
			var sp controlapi.ShadowPolicy
			if err := adminCall(ctx, *state, http.MethodDelete, controlapi.PathShadow, nil, &sp); err != nil {
				return err
			}
			if *asJSON {
				return printJSON(env.Stdout, sp)
			}
			printf(env.Stdout, "cleared shadow policy %s\n", sp.Name)
			return nil
		}
		return usagef("unknown verb %q: want apply, status, promote or clear", verb)
	}
}

// shadowApply checks the file as 'policy apply' does and applies it as
// the shadow policy.
func shadowApply(ctx context.Context, env Env, state, file string, strict, asJSON bool) error {
	doc, p, err := readPolicy(file)
	if err != nil {
		return fmt.Errorf("%w (nothing was applied)", err)
	}
	if _, err := checkUnmatched(ctx, env, state, p, strict); err != nil {
		return fmt.Errorf("%w (nothing was applied)", err)
	}
	var sp controlapi.ShadowPolicy
	if err := adminCall(ctx, state, http.MethodPost, controlapi.PathShadow, controlapi.PolicyApplyRequest{Document: string(doc)}, &sp); err != nil {
		return err
	}
	if asJSON {
		return printJSON(env.Stdout, sp)
	}
	printf(env.Stdout, "applied shadow policy %s: gateways evaluate it next to the active policy and record where they differ\n", sp.Name)
	return nil
}

func printShadowStatus(env Env, st controlapi.ShadowStatus) error {
	if st.Shadow.Version == 0 {
		fmt.Fprintln(env.Stdout, "no shadow policy (apply one with: agentmesh policy shadow apply FILE)")
		return nil
	}
	printf(env.Stdout, "shadow policy %s (applied %s by %s) against active version %d: %d differences in %d requests\n",
		st.Shadow.Name, st.Shadow.AppliedAt.Local().Format(time.RFC3339), st.Shadow.AppliedBy, st.ActiveVersion, st.Differences, st.Requests)
	if len(st.Groups) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SRC\tDST\tTARGET\tACTIVE -> SHADOW\tCOUNT\tFIRST\tLAST\tEXAMPLES")
	for _, g := range st.Groups {
		printf(tw, "%s\t%s\t%s\t%s -> %s\t%d\t%s\t%s\t%s\n", g.Src, g.Dst, shadowTarget(g), g.Active, g.Shadow, g.Count,
			g.First.Local().Format(time.RFC3339), g.Last.Local().Format(time.RFC3339), strings.Join(g.Examples, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Omitted > 0 {
		printf(env.Stdout, "%d more differences in groups not listed (at most %d groups)\n", st.Omitted, controlapi.MaxShadowGroups)
	}
	return nil
}

// shadowTarget names what a group's requests target: "tool:NAME",
// "resource:URI", "prompt:NAME", "model:NAME", or the method.
func shadowTarget(g controlapi.ShadowGroup) string {
	switch {
	case g.Tool != "":
		return "tool:" + g.Tool
	case g.Resource != "":
		return "resource:" + g.Resource
	case g.Prompt != "":
		return "prompt:" + g.Prompt
	case g.Model != "":
		return "model:" + g.Model
	}
	return g.Method
}
