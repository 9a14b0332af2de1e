package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/policy/replay"
	"github.com/agentmesh/agentmesh/internal/termtext"
)

const policySuggestUsage = "[--since DURATION|TIME] [--dst SEL] [--args] [--json]"

const policySuggestLong = `Reads the recorded requests of the audit trail in the window (as policy replay does) and
prints a policy that grants what was actually used and nothing more: per source group
(sources with the same tag set at the time are one group; an untagged source is a group
of its own) and destination, the tools, resources, prompts, models and paths used, with
the evidence in comments (counts, first and last seen, example event ids). Names collapse
to a glob PREFIX* only when at least 3 used names share PREFIX (ending at _ - . : or /)
and no other name seen at that destination starts with it. With --args, an item whose
calls kept argument values in the trail (those the active policy's whens read) gets a
when bounding them to what was seen (integer ranges, up to 5 strings, one boolean).

It generates tests pinning the observed allowed calls and known denials, keeps the active
policy's groups, limits, tool_pins and audit_args, and checks the result before printing
it: it must compile, pass its tests, and replay over the same window (the replay engine,
in process) must allow every observed allowed call; otherwise it prints nothing and exits
1. The active policy's grants, and list entries, that nothing in the window used are
reported on stderr (in the JSON with --json): candidates to remove. Nothing is applied.

Examples:
  agentmesh policy suggest > suggested.hujson
  agentmesh policy suggest --since 30d --dst tool:ledger --args
  agentmesh policy suggest --json | jq .unused_grants`

// policySuggest is 'agentmesh policy suggest'.
func policySuggest(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	since := fs.String("since", "30d", "use the events after this: a duration back from now (30d, 12h) or an RFC 3339 time")
	dst := fs.String("dst", "", "only requests at this destination `SEL`")
	args := fs.Bool("args", false, "bound argument values in whens, from the values the trail kept")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		q := url.Values{"kind": {string(audit.KindRequest)}, "order": {"asc"}}
		if *dst != "" {
			if err := audit.CheckSelector(*dst); err != nil {
				return usagef("--dst %v", err)
			}
			q.Set("dst", *dst)
		}
		from, err := parseSince(*since, time.Now())
		if err != nil {
			return usagef("--since: %v", err)
		}
		q.Set("since", from.UTC().Format(time.RFC3339Nano))
		cl, err := adminClient(ctx, *state)
		if err != nil {
			return err
		}
		defer cl.Close()
		opts := replay.SuggestOptions{Args: *args, Since: from, SeenDestinationsOnly: *dst != ""}
		var active int64
		if opts.Active, opts.ActiveVersion, active, err = activePolicy(ctx, cl); err != nil {
			return err
		}
		s := replay.NewSuggester(opts)
		if err := streamEvents(ctx, cl, q, s.Add); err != nil {
			return err
		}
		sg, err := s.Suggest()
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, sg)
		}
		fmt.Fprint(env.Stdout, sg.Document)
		printSuggestReport(env, active, sg)
		return nil
	}
}

// printSuggestReport writes, on stderr, what the suggestion rests on and
// what the active policy grants that nothing used.
func printSuggestReport(env Env, active int64, sg *replay.Suggestion) {
	w := env.Stderr
	printf(w, "suggest: %d request events since %s: %d allowed calls and %d denials used as evidence\n",
		sg.Events, sg.Since.Local().Format(time.RFC3339), sg.Allowed, sg.Denied)
	for _, c := range sg.NotUsed {
		printf(w, "  not used: %d  %s\n", c.Count, c.Why)
	}
	printf(w, "suggest: checked: it compiles, its %d tests pass, and replay over the same window allows all %d observed allowed calls\n",
		sg.Tests, sg.Check.AllowedChecked)
	if sg.Check.NewlyAllowed > 0 {
		printf(w, "suggest: it would allow %d calls that were denied (a group shares what its members used, or a glob covers them):\n", sg.Check.NewlyAllowed)
		for _, c := range sg.Check.Changes {
			printf(w, "  %s -> %s %s: %d (%s)\n", termtext.Escape(c.Src), termtext.Escape(c.Dst), termtext.Escape(c.Item), c.Count, strings.Join(c.Examples, ","))
		}
	}
	if active == 0 {
		return
	}
	if len(sg.UnusedGrants) == 0 && len(sg.UnusedEntries) == 0 {
		printf(w, "suggest: every grant and entry of the active policy (version %d) was used in the window\n", active)
		return
	}
	printf(w, "suggest: unused in the window, in the active policy (version %d): candidates to remove\n", active)
	for _, g := range sg.UnusedGrants {
		printf(w, "  grants[%d] (line %d): %s -> %s: nothing it allows was used\n", g.Index, g.Line,
			termtext.Escape(strings.Join(g.Src, ",")), termtext.Escape(strings.Join(g.Dst, ",")))
	}
	for _, u := range sg.UnusedEntries {
		printf(w, "  grants[%d].%s (line %d): %q matched no call it decided\n", u.Grant, u.Field, u.Line, termtext.Escape(u.Entry))
	}
}
