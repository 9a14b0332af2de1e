package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/policy/replay"
	"github.com/agentmesh/agentmesh/internal/termtext"
)

const policyReplayLong = `Decides every recorded request of the audit trail in the window again under the policy
in FILE and lists the decisions it would change, grouped by source, destination, item and
old -> new decision, with count, first and last time and example event ids (look one up with
agentmesh audit --json). It also says how many requests it could not judge and why (no basis
recorded, a when reading arguments the trail does not keep, ...) and how many events were not
policy decisions (the handshake, lists, malformed input, pin or limit refusals).

Every event is also decided again by the policy version it was recorded under (the active
one, and earlier ones fetched from the coordinator's history) and must come out exactly as
recorded: a difference is reported as "replay disagrees with the recorded decision" and the
exit status is 1. Nothing is applied.

Examples:
  agentmesh policy replay new-policy.hujson
  agentmesh policy replay new-policy.hujson --since 30d --src agent:fraud-detector --json`

// policyReplay is 'agentmesh policy replay FILE'.
func policyReplay(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	since := fs.String("since", "7d", "replay events after this: a duration back from now (7d, 12h) or an RFC 3339 time")
	src := fs.String("src", "", "only requests from this source `SEL`")
	dst := fs.String("dst", "", "only requests at this destination `SEL`")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "FILE"); err != nil {
			return err
		}
		q := url.Values{"kind": {string(audit.KindRequest)}, "order": {"asc"}}
		for _, f := range []struct{ name, v string }{{"src", *src}, {"dst", *dst}} {
			if f.v == "" {
				continue
			}
			if err := audit.CheckSelector(f.v); err != nil {
				return usagef("--%s %v", f.name, err)
			}
			q.Set(f.name, f.v)
		}
		from, err := parseSince(*since, time.Now())
		if err != nil {
			return usagef("--since: %v", err)
		}
		q.Set("since", from.UTC().Format(time.RFC3339Nano))
		_, cand, err := readPolicy(pos[0])
		if err != nil {
			return err
		}
		cl, err := adminClient(ctx, *state)
		if err != nil {
			return err
		}
		defer cl.Close()
		opts := replay.Options{Candidate: cand}
		var active int64
		if opts.Active, opts.ActiveVersion, active, err = activePolicy(ctx, cl); err != nil {
			return err
		}
		// Events recorded under earlier versions are checked against
		// theirs, fetched once each.
		opts.Version = func(label string) *policy.Policy {
			v, err := strconv.ParseInt(label, 10, 64)
			if err != nil || v <= 0 {
				return nil
			}
			var old controlapi.PolicyVersion
			if cl.Call(ctx, http.MethodGet, controlapi.PathPolicy+"?version="+label, nil, &old) != nil || old.Version != v {
				return nil
			}
			p, err := policy.Compile([]byte(old.Document), label)
			if err != nil {
				return nil
			}
			return p
		}
		e := replay.New(opts)
		// One event at a time: the engine's memory grows with the
		// groups it reports, not with the window.
		if err := streamEvents(ctx, cl, q, e.Add); err != nil {
			return err
		}
		rep := e.Report()
		if *asJSON {
			if err := printJSON(env.Stdout, rep); err != nil {
				return err
			}
		} else {
			printReplay(env, pos[0], from, active, &rep)
		}
		if rep.DisagreementCount > 0 {
			return fmt.Errorf("replay disagrees with the recorded decision for %d events (decided again by the policy version they were recorded under): this is a bug, please report it with the event ids above", rep.DisagreementCount)
		}
		return nil
	}
}

func printReplay(env Env, file string, from time.Time, active int64, rep *replay.Report) {
	printf(env.Stdout, "replay of %s over the requests since %s\n", file, from.Local().Format(time.RFC3339))
	printf(env.Stdout, "%s\n", rep.Summary())
	if len(rep.Changes) > 0 {
		fmt.Fprintln(env.Stdout)
		tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SRC\tDST\tITEM\tDECISION\tCOUNT\tFIRST\tLAST\tEXAMPLES")
		for _, c := range rep.Changes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s -> %s\t%d\t%s\t%s\t%s\n", termtext.Escape(c.Src), termtext.Escape(c.Dst), termtext.Escape(c.Item),
				termtext.Escape(c.From), termtext.Escape(c.To), c.Count, c.First.Local().Format(time.RFC3339), c.Last.Local().Format(time.RFC3339),
				strings.Join(c.Examples, ","))
		}
		tw.Flush()
		if rep.Ungrouped > 0 {
			printf(env.Stdout, "and %d more changed decisions in groups beyond the first %d (narrow with --src, --dst or --since)\n", rep.Ungrouped, replay.MaxGroups)
		}
	}
	for _, part := range []struct {
		title string
		list  []replay.Count
	}{{"not judged", rep.NotJudged}, {"not policy decisions", rep.Skipped}} {
		if len(part.list) == 0 {
			continue
		}
		printf(env.Stdout, "\n%s:\n", part.title)
		for _, c := range part.list {
			printf(env.Stdout, "  %d  %s\n", c.Count, c.Why)
		}
	}
	switch {
	case rep.DisagreementCount > 0:
		printf(env.Stdout, "\nreplay disagrees with the recorded decision (%d events):\n", rep.DisagreementCount)
		for _, d := range rep.Disagreements {
			printf(env.Stdout, "  event %s (policy version %s): recorded %s, replayed %s\n", d.EventID, d.Version, d.Recorded, d.Replayed)
		}
	case rep.Checked > 0:
		printf(env.Stdout, "\nself-check: the policy versions they were recorded under (%s; active %d) decide all %d checked events as recorded\n",
			strings.Join(rep.CheckedVersions, ", "), active, rep.Checked)
	}
}

// streamEvents reads the audit events the admin API's GET /v1/audit
// answers for q, one at a time, and hands each to add: what replay and
// suggest read.
func streamEvents(ctx context.Context, cl *controlclient.Client, q url.Values, add func(*audit.Event)) error {
	body, err := cl.Stream(ctx, controlapi.PathAudit+"?"+q.Encode())
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var ev audit.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad event from coordinator: %w", err)
		}
		add(&ev)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading the audit trail: %w", err)
	}
	return nil
}

// activePolicy fetches and compiles the coordinator's current policy,
// labelled with its version: nil, "" and 0 when none was ever applied.
func activePolicy(ctx context.Context, cl *controlclient.Client) (_ *policy.Policy, label string, version int64, _ error) {
	var pv controlapi.PolicyVersion
	if err := cl.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &pv); err != nil {
		return nil, "", 0, err
	}
	if pv.Version <= 0 {
		return nil, "", 0, nil
	}
	label = strconv.FormatInt(pv.Version, 10)
	p, err := policy.Compile([]byte(pv.Document), label)
	if err != nil {
		return nil, "", 0, fmt.Errorf("the coordinator's policy version %d does not compile here: %w", pv.Version, err)
	}
	return p, label, pv.Version, nil
}
