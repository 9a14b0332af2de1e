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
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/termtext"
)

func init() {
	register(&command{
		name:  "audit",
		usage: "[verify [--receipt FILE]... | export --format jsonl] [--src SEL] [--dst SEL] [--decision allow|deny] [--kind KIND] [--method M] [--tool NAME] [--since DURATION|TIME] [--until TIME] [--limit N] [--json] [--follow]",
		short: "query, follow, export and verify the audit trail (admin)",
		long: `Without a subcommand, audit prints the events that match the filters, newest first, as a
table (--json: one object per line). With --follow, it prints the newest --limit of them
oldest first, as tail -f does, then each new one as it arrives (--limit 0: the whole trail
first). Times are local, with the zone's offset; columns keep their widths across batches
(a longer cell widens its column from then on).

Selectors (--src, --dst): agent:NAME, tool:NAME, model:NAME, admin:NAME, a full SPIFFE ID, or a
tailnet identity (tailnet:HOST). A bare NAME, a tag, or an unknown --kind matches no event and
is refused (exit status 2).

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
	since := fs.String("since", "", "events after this: a duration back from now (1h, 7d) or an RFC 3339 time")
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
		// A value that can match no event is a mistake to report, not
		// an empty table.
		for _, f := range []struct{ name, v string }{{"src", *src}, {"dst", *dst}} {
			if err := audit.CheckSelector(f.v); err != nil {
				return nil, usagef("--%s %v", f.name, err)
			}
		}
		if *kind != "" {
			if _, err := audit.ParseKind(*kind); err != nil {
				return nil, usagef("--kind: %v", err)
			}
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
	limit := fs.Int("limit", 100, "at most `N` events (0: no limit); with --follow, the newest N before new ones")
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
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		events, newest, err := fetchEvents(ctx, cl, q)
		if err != nil {
			return err
		}
		if !*follow {
			return printEvents(env.Stdout, &eventTable{}, events, *asJSON)
		}
		// Follow as tail -f does: the newest --limit events, oldest
		// first, then each new one as it arrives.
		slices.Reverse(events)
		t := &eventTable{min: followWidths}
		if err := printEvents(env.Stdout, t, events, *asJSON); err != nil {
			return err
		}
		q.Del("limit")
		return followAudit(ctx, env, cl, q, t, newest, *asJSON)
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

// parseSince accepts a duration back from now (Go's units, or whole days
// such as 7d) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
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

// followAudit polls for events after the one with seq after, and prints
// them to t, oldest first.
func followAudit(ctx context.Context, env Env, cl *controlclient.Client, q url.Values, t *eventTable, after int64, asJSON bool) error {
	q.Set("order", "asc")
	for {
		q.Set("after", strconv.FormatInt(after, 10))
		events, maxSeq, err := fetchEvents(ctx, cl, q)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			printf(env.Stderr, "audit --follow: %v (retrying)\n", err)
		} else if len(events) > 0 {
			if err := printEvents(env.Stdout, t, events, asJSON); err != nil {
				return err
			}
			after = maxSeq
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// eventTimeLayout is how the table shows an event's time: local, to the
// millisecond, with the zone's offset, in a fixed width.
const eventTimeLayout = "2006-01-02 15:04:05.000 -07:00"

// eventColumns are the audit table's columns.
var eventColumns = []string{"TIME", "KIND", "SRC", "DST", "WHAT", "DECISION", "REASON"}

// followWidths are the least widths of the columns under --follow, so
// that later rows usually fit the widths the first ones set.
var followWidths = []int{len(eventTimeLayout), len("connection"), 24, 24, 32, len("DECISION"), 0}

// eventTable prints events as a table whose columns line up across
// batches: each column is as wide as its widest cell so far (and at least
// min), and only grows; the header is printed with the first batch.
type eventTable struct {
	min    []int
	widths []int
	header bool
}

// eventRow is an event's cells, escaped for the terminal (termtext), "-"
// for an empty one.
func eventRow(e audit.Event) []string {
	what := e.Method
	for _, s := range []string{e.Tool, e.Resource, e.Prompt, e.Model, e.Action, e.Target} {
		if s != "" {
			what = strings.TrimSpace(what + " " + s)
		}
	}
	why := string(e.Reason)
	if sh := e.Shadow; sh != nil {
		// Shadow mode: what the shadow policy would have decided.
		why = strings.TrimSpace(why + " (" + sh.PolicyVersion + ": " + string(sh.Decision) + " " + string(sh.Reason) + ")")
	}
	row := []string{e.Time.Local().Format(eventTimeLayout), string(e.Kind), identity.Short(e.Src), identity.Short(e.Dst),
		what, string(e.Decision), why}
	for i, c := range row {
		row[i] = orDash(termtext.Escape(c))
	}
	return row
}

func (t *eventTable) print(w io.Writer, events []audit.Event) error {
	rows := make([][]string, 0, len(events)+1)
	if !t.header {
		rows = append(rows, eventColumns)
		t.header = true
	}
	for _, e := range events {
		rows = append(rows, eventRow(e))
	}
	if t.widths == nil {
		t.widths = make([]int, len(eventColumns))
		copy(t.widths, t.min)
	}
	for _, r := range rows {
		for i, c := range r {
			t.widths[i] = max(t.widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+2))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// printEvents prints events to w as JSON lines, or as rows of t.
func printEvents(w io.Writer, t *eventTable, events []audit.Event, asJSON bool) error {
	if asJSON {
		for _, e := range events {
			if err := printJSONLine(w, e); err != nil {
				return err
			}
		}
		return nil
	}
	return t.print(w, events)
}
