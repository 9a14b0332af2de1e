package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"agentmesh/internal/audit"
	"agentmesh/internal/controlapi"
	"agentmesh/internal/controlclient"
	"agentmesh/internal/identity"
	"agentmesh/internal/termtext"
)

func init() {
	register(&command{
		name:  "audit",
		usage: "[verify [--receipt FILE]... | export --format jsonl] [--src SEL] [--dst SEL] [--decision allow|deny] [--kind KIND] [--method M] [--tool NAME] [--since DURATION|TIME] [--until TIME] [--limit N] [--json] [--follow]",
		short: "query, follow, export and verify the audit trail (admin)",
		long: `Without a subcommand, audit prints the events that match the filters, newest first, as a
table (--json: one object per line); with --follow, it prints them as they arrive.

Selectors: agent:NAME, tool:NAME, model:NAME, or a full SPIFFE ID.

Examples:
  agentmesh audit --decision deny --since 1h
  agentmesh audit --src agent:fraud-detector --tool query --json
  agentmesh audit export --format jsonl > audit.jsonl
  agentmesh audit verify
  agentmesh audit verify --receipt ./payments/audit-receipt.json --receipt ./files/audit-receipt.json`,
		subs: []*subcommand{
			{name: "", usage: "[--src SEL] [--dst SEL] [--decision allow|deny] [--kind KIND] [--method M] [--tool NAME] [--since DURATION|TIME] [--until TIME] [--limit N] [--json] [--follow]",
				short: "query", flags: auditQuery},
			{name: "verify", usage: "[--receipt FILE]... [--json]",
				short: "recompute the hash chain and check checkpoint signatures",
				long: `Says what was proved and what was not; exits non-zero naming the first broken entry, or
when event ids arrived twice with different content.

--receipt also checks receipts that gateways kept (STATE/audit-receipt.json, the signed head
and batch of their last shipped batch): deleting the events a receipt covers, even with their
checkpoints, or storing its batch other than as sent, is detected.`,
				flags: auditVerify},
			{name: "export", usage: "--format jsonl [--src SEL] [--dst SEL] [--decision allow|deny] [--kind KIND] [--method M] [--tool NAME] [--since DURATION|TIME] [--until TIME]",
				short: "stream every event that matches, oldest first, as JSON lines", flags: auditExport},
		},
	})
}

// fileList is a repeatable flag of file names.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ",") }

func (l *fileList) Set(v string) error {
	if v == "" {
		return errors.New("empty file name")
	}
	*l = append(*l, v)
	return nil
}

// auditFilters defines the flags that select events, shared by the query
// and export, and returns the function that checks them and turns them into
// the coordinator's query parameters, with times relative to now.
func auditFilters(fs *flag.FlagSet) func(now time.Time) (url.Values, error) {
	src := fs.String("src", "", "only events from this source `SEL`")
	dst := fs.String("dst", "", "only events at this destination `SEL`")
	decision := fs.String("decision", "", "allow or deny")
	kind := fs.String("kind", "", "event `KIND`: connection, request, admin, session, integrity")
	method := fs.String("method", "", "MCP `METHOD`, such as tools/call")
	tool := fs.String("tool", "", "tool `NAME`")
	since := fs.String("since", "", "events after this: a duration back from now (1h) or an RFC 3339 time")
	until := fs.String("until", "", "events before this RFC 3339 `TIME`")
	return func(now time.Time) (url.Values, error) {
		q := url.Values{}
		for k, v := range map[string]string{"src": *src, "dst": *dst, "decision": *decision, "kind": *kind, "method": *method, "tool": *tool} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if d := audit.Decision(*decision); d != "" && d != audit.Allow && d != audit.Deny {
			return nil, usagef("--decision must be allow or deny")
		}
		if *since != "" {
			t, err := parseSince(*since, now)
			if err != nil {
				return nil, usagef("--since: %v", err)
			}
			q.Set("since", t.UTC().Format(time.RFC3339Nano))
		}
		if *until != "" {
			t, err := time.Parse(time.RFC3339, *until)
			if err != nil {
				return nil, usagef("--until: want an RFC 3339 time such as 2026-11-28T10:00:00Z")
			}
			q.Set("until", t.UTC().Format(time.RFC3339Nano))
		}
		return q, nil
	}
}

// auditQuery is 'agentmesh audit' without a subcommand: print the events
// that match, newest first, or follow them.
func auditQuery(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	filters := auditFilters(fs)
	limit := fs.Int("limit", 100, "at most `N` events (0: no limit)")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	return func(ctx context.Context, pos []string) error {
		if len(pos) > 0 {
			return usagef("unexpected argument %q (a subcommand, verify or export, comes first)", pos[0])
		}
		q, err := filters(time.Now())
		if err != nil {
			return err
		}
		cl, err := adminClient(ctx, *state)
		if err != nil {
			return err
		}
		defer cl.Close()
		if *follow {
			return followAudit(ctx, env, cl, q, *asJSON)
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		events, _, err := fetchEvents(ctx, cl, q)
		if err != nil {
			return err
		}
		return printEvents(env.Stdout, events, *asJSON, true)
	}
}

func auditVerify(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	var receipts fileList
	fs.Var(&receipts, "receipt", "a receipt `FILE` a gateway kept (repeatable)")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		var rep audit.Report
		if len(receipts) == 0 {
			if err := adminCall(ctx, *state, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil {
				return err
			}
		} else {
			var req controlapi.VerifyRequest
			for _, f := range receipts {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("--receipt: %w", err)
				}
				r, err := audit.ParseReceipt(b)
				if err != nil {
					return usagef("--receipt %s: not a receipt: %v", f, err)
				}
				req.Receipts = append(req.Receipts, r)
			}
			if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathVerify, req, &rep); err != nil {
				return err
			}
		}
		if *asJSON {
			printJSON(env.Stdout, rep)
		} else {
			printLines(env.Stdout, "", rep.Lines())
		}
		if !rep.OK || rep.Conflicts > 0 {
			// An intact chain with id conflicts still needs a person.
			return errSilent
		}
		return nil
	}
}

func auditExport(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	filters := auditFilters(fs)
	format := fs.String("format", "jsonl", "export `FORMAT` (jsonl)")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		q, err := filters(time.Now())
		if err != nil {
			return err
		}
		if *format != "jsonl" {
			return usagef("--format: only jsonl is supported")
		}
		q.Set("order", "asc")
		cl, err := adminClient(ctx, *state)
		if err != nil {
			return err
		}
		defer cl.Close()
		body, err := cl.Stream(ctx, controlapi.PathAudit+"?"+q.Encode())
		if err != nil {
			return err
		}
		defer body.Close()
		// The trail is JSON lines: escaped as every JSON output is, so
		// that an export shown on a terminal cannot drive it.
		out := termtext.NewJSONWriter(env.Stdout)
		if _, err := io.Copy(out, body); err != nil {
			return err
		}
		return out.Flush()
	}
}

// parseSince accepts a duration back from now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("duration must be positive")
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want a duration such as 1h or an RFC 3339 time")
	}
	return t, nil
}

func fetchEvents(ctx context.Context, cl *controlclient.Client, q url.Values) ([]audit.Event, int64, error) {
	body, err := cl.Stream(ctx, controlapi.PathAudit+"?"+q.Encode())
	if err != nil {
		return nil, 0, err
	}
	defer body.Close()
	var out []audit.Event
	var maxSeq int64
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, 0, fmt.Errorf("bad event from coordinator: %w", err)
		}
		out = append(out, e)
		maxSeq = max(maxSeq, e.Seq)
	}
	return out, maxSeq, sc.Err()
}

// followAudit polls for events after the newest one seen.
func followAudit(ctx context.Context, env Env, cl *controlclient.Client, q url.Values, asJSON bool) error {
	q.Set("order", "asc")
	var after int64
	header := true
	for {
		q.Set("after", strconv.FormatInt(after, 10))
		events, maxSeq, err := fetchEvents(ctx, cl, q)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			printf(env.Stderr, "audit --follow: %v (retrying)\n", err)
		} else if len(events) > 0 {
			printEvents(env.Stdout, events, asJSON, header)
			header = false
			after = maxSeq
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func printEvents(w io.Writer, events []audit.Event, asJSON, header bool) error {
	if asJSON {
		for _, e := range events {
			if err := printJSONLine(w, e); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, "TIME\tKIND\tSRC\tDST\tWHAT\tDECISION\tREASON")
	}
	for _, e := range events {
		what := e.Method
		for _, s := range []string{e.Tool, e.Resource, e.Prompt, e.Model, e.Action, e.Target} {
			if s != "" {
				what = strings.TrimSpace(what + " " + s)
			}
		}
		printf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), string(e.Kind),
			identity.Short(e.Src), identity.Short(e.Dst), what, e.Decision, e.Reason)
	}
	return tw.Flush()
}
