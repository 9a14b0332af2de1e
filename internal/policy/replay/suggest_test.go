package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// suggestTraffic is a day under activeDoc: two tellers transferring within
// the cap (and one over it), a senior who only transfers, an auditor who
// reads four books tables, logs in and is refused a delete.
func suggestTraffic(t testing.TB, rc *recorder) []audit.Event {
	tellers, senior := []identity.Tag{"tag:tellers"}, []identity.Tag{"tag:senior"}
	var evs []audit.Event
	for i := range 40 {
		evs = append(evs, rc.call(t, "teller"+strconv.Itoa(i%2), tellers, "transfer", fmt.Sprintf(`{"amount":%d,"memo":"m%d"}`, 100+i*10, i)))
	}
	evs = append(evs, rc.call(t, "teller0", tellers, "transfer", `{"amount":5000}`))
	for range 3 {
		evs = append(evs, rc.call(t, "boss", senior, "transfer", `{"amount":7}`))
	}
	for _, tbl := range []string{"read_books", "read_ledger", "read_rates", "read_books"} {
		evs = append(evs, rc.call(t, "auditor", nil, tbl, ""))
	}
	evs = append(evs, rc.call(t, "auditor", nil, "login", `{"password":"hunter2"}`))
	evs = append(evs, rc.call(t, "auditor", nil, "delete", ""))
	return evs
}

func suggestFrom(t *testing.T, opts SuggestOptions, evs []audit.Event) *Suggestion {
	t.Helper()
	s := NewSuggester(opts)
	for i := range evs {
		s.Add(&evs[i])
	}
	sg, err := s.Suggest()
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

func TestSuggestGrantsWhatWasUsedAndNothingMore(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	evs := suggestTraffic(t, rc)
	sg := suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "7", Args: true}, evs)

	// It compiles, its tests pass (Compile runs them), and replay of it
	// over the same events allows every allowed call.
	p := compile(t, sg.Document, "s")
	if sg.Tests == 0 || !strings.Contains(sg.Document, `"tests"`) {
		t.Fatalf("no tests generated:\n%s", sg.Document)
	}
	e := New(Options{Candidate: p})
	for i := range evs {
		if evs[i].Decision == audit.Allow {
			e.Add(&evs[i])
		}
	}
	if rep := e.Report(); rep.Changed != 0 || rep.Judged != sg.Allowed || sg.Allowed != 40+3+4+1 {
		t.Fatalf("replay of the suggestion: %s, %+v; allowed %d", rep.Summary(), rep.Changes, sg.Allowed)
	}
	if sg.Check.NewlyDenied != 0 || sg.Check.AllowedChecked != sg.Allowed || !strings.Contains(sg.Document, "allows all 48 observed allowed calls") {
		t.Fatalf("check %+v\n%s", sg.Check, sg.Document)
	}

	// What it grants, decided: the tellers (one tag set, two names) may
	// transfer what they transferred; the auditor's three read_ tables
	// collapse to read_*; the senior gets no refund; nobody deletes.
	decide := func(src string, tags []identity.Tag, tool, args string) bool {
		var a map[string]any
		if args != "" {
			dec := json.NewDecoder(strings.NewReader(args))
			dec.UseNumber()
			if err := dec.Decode(&a); err != nil {
				t.Fatal(err)
			}
		}
		return p.Decide(policy.Request{Src: policy.Node{Kind: identity.KindAgent, Name: identity.Name(src), Tags: tags},
			Dst: policy.Node{Kind: identity.KindTool, Name: "ledger"}, Action: policy.ActionTool, Method: "tools/call", Tool: tool, Args: a}).Allow
	}
	for _, c := range []struct {
		src   string
		tags  []identity.Tag
		tool  string
		args  string
		allow bool
	}{
		{"teller0", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":490}`, true},
		{"teller1", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":100}`, true},
		{"teller1", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":600}`, false}, // above what was used
		{"teller1", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":99}`, false},
		{"teller2", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":200}`, false}, // not a teller seen
		{"boss", []identity.Tag{"tag:senior"}, "transfer", `{"amount":7}`, true},
		{"boss", []identity.Tag{"tag:senior"}, "transfer", `{"amount":8}`, false},
		{"boss", []identity.Tag{"tag:senior"}, "refund", `{"amount":7}`, false},
		{"auditor", nil, "read_ledger", ``, true},
		{"auditor", nil, "read_other", ``, true}, // the glob
		{"auditor", nil, "delete", ``, false},
		{"auditor", nil, "login", `{"password":"x"}`, true},
	} {
		if got := decide(c.src, c.tags, c.tool, c.args); got != c.allow {
			t.Errorf("%s %s %s: allow %v, want %v", c.src, c.tool, c.args, got, c.allow)
		}
	}
	if !strings.Contains(sg.Document, `"read_*", // 4 calls by 1 sources`) || !strings.Contains(sg.Document, "covers read_books read_ledger read_rates") {
		t.Errorf("the glob's evidence is not in the document:\n%s", sg.Document)
	}
	if !strings.Contains(sg.Document, `"when": "args.amount >= 100 \u0026\u0026 args.amount <= 490"`) &&
		!strings.Contains(sg.Document, `"when": "args.amount >= 100 && args.amount <= 490"`) {
		t.Errorf("no bound on the tellers' amounts:\n%s", sg.Document)
	}
	// Known denials are pinned: the delete, and the transfer over the cap
	// with the amount it was refused for.
	if !strings.Contains(sg.Document, `"deny": ["tools/call delete"]`) || !strings.Contains(sg.Document, `"args": {"amount":5000}, "deny": ["tools/call transfer"]`) {
		t.Errorf("known denials not pinned:\n%s", sg.Document)
	}

	// Unused in the active policy: the senior's refund entry; the
	// resources of the auditor's grant. Every grant decided something.
	var entries []string
	for _, u := range sg.UnusedEntries {
		entries = append(entries, fmt.Sprintf("%d:%s:%s", u.Grant, u.Field, u.Entry))
	}
	if len(sg.UnusedGrants) != 0 || !slices.Equal(entries, []string{"1:tools:refund", "2:resources:ledger://books/*"}) {
		t.Fatalf("unused grants %+v, entries %v", sg.UnusedGrants, entries)
	}

	// Without --args: no when, the tellers may transfer any amount.
	sg = suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "7"}, evs)
	if strings.Contains(sg.Document, `"when"`) {
		t.Fatalf("a when without Args:\n%s", sg.Document)
	}
	// A glob needs three names: with MinGlob 4, none.
	sg = suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "7", MinGlob: 4}, evs)
	if strings.Contains(sg.Document, `"read_*"`) {
		t.Fatalf("a glob over three names with MinGlob 4:\n%s", sg.Document)
	}
}

// A name seen at the destination that the group did not use keeps the
// glob from forming: read_secret was refused to the auditor.
func TestSuggestGlobsNeverCoverANameSeenUnused(t *testing.T) {
	const doc = `{"grants": [{"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["read_books", "read_ledger", "read_rates"]}]}`
	active := compile(t, doc, "1")
	rc := &recorder{pol: active, version: "1"}
	var evs []audit.Event
	for _, tbl := range []string{"read_books", "read_ledger", "read_rates", "read_secret"} {
		evs = append(evs, rc.call(t, "auditor", nil, tbl, ""))
	}
	sg := suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "1"}, evs)
	if strings.Contains(sg.Document, `"read_*"`) || !strings.Contains(sg.Document, `"deny": ["tools/call read_secret"]`) {
		t.Fatalf("suggestion:\n%s", sg.Document)
	}
}

// BenchmarkSuggest reads 1,000,000 recorded events (a thousand distinct
// requests from a dozen tellers, a senior and an auditor) and suggests a
// policy from them, checks included: one op is the whole million.
func BenchmarkSuggest(b *testing.B) {
	active := compile(b, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	evs := make([]audit.Event, 0, 1000)
	for i := range 1000 {
		switch i % 4 {
		case 0, 1:
			evs = append(evs, rc.call(b, "teller"+strconv.Itoa(i%13), []identity.Tag{"tag:tellers"}, "transfer", fmt.Sprintf(`{"amount":%d,"memo":"x"}`, i)))
		case 2:
			evs = append(evs, rc.call(b, "boss", []identity.Tag{"tag:senior"}, "refund", `{"amount":5}`))
		default:
			evs = append(evs, rc.call(b, "auditor", nil, "read_"+strconv.Itoa(i%7), ""))
		}
	}
	const events = 1_000_000
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s := NewSuggester(SuggestOptions{Active: active, ActiveVersion: "7", Args: true})
		for i := range events {
			ev := &evs[i%len(evs)]
			s.Add(ev)
		}
		sg, err := s.Suggest()
		if err != nil {
			b.Fatal(err)
		}
		if sg.Allowed == 0 || sg.Check.NewlyDenied != 0 {
			b.Fatalf("suggestion %+v", sg.Check)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
}

// BenchmarkSuggestFromLines adds what `agentmesh policy suggest` pays per
// event on top of the suggester: decoding the JSON line the coordinator
// streams. One op is 1,000,000 events.
func BenchmarkSuggestFromLines(b *testing.B) {
	active := compile(b, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	lines := make([][]byte, 0, 1000)
	for i := range 1000 {
		ev := rc.call(b, "teller"+strconv.Itoa(i%13), []identity.Tag{"tag:tellers"}, "transfer", fmt.Sprintf(`{"amount":%d}`, i))
		line, err := json.Marshal(&ev)
		if err != nil {
			b.Fatal(err)
		}
		lines = append(lines, line)
	}
	const events = 1_000_000
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s := NewSuggester(SuggestOptions{Active: active, ActiveVersion: "7", Args: true})
		for i := range events {
			var ev audit.Event
			if err := json.Unmarshal(lines[i%len(lines)], &ev); err != nil {
				b.Fatal(err)
			}
			s.Add(&ev)
		}
		if _, err := s.Suggest(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
}

// record makes the request event a gateway records for r, as recorder
// does for tool calls at the ledger.
func record(t testing.TB, pol *policy.Policy, version string, n int, r policy.Request) audit.Event {
	d := pol.Decide(r)
	ev := audit.Event{
		V: audit.SchemaVersion, ID: fmt.Sprintf("%032x", n), Time: t0.Add(time.Duration(n) * time.Second),
		Kind: audit.KindRequest, Src: td + "agent/" + string(r.Src.Name), Dst: td + "tool/" + string(r.Dst.Name), Method: r.Method,
		Tool: r.Tool, Resource: r.Resource, Decision: audit.Deny, Reason: d.Reason, PolicyVersion: version,
		Basis: admission.Basis(&r, r.Method, pol),
	}
	if d.Allow {
		ev.Decision = audit.Allow
	}
	if d.Grant >= 0 {
		ev.Rule = strconv.Itoa(d.Grant)
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestSuggestKeepsApprovalsAndRestrictionsAndGlobsResources(t *testing.T) {
	const doc = `{
  "groups": {"group:oncall": ["admin:alice"]},
  "grants": [
    {"src": ["agent:ops"], "dst": ["tool:ledger"], "tools": ["drop_table"], "approval": "group:oncall", "approval_timeout": "10m"},
    {"src": ["agent:ops"], "dst": ["tool:ledger"], "tools": ["*"]},
    {"src": ["agent:ops"], "dst": ["tool:files"], "resources": ["file:///srv/*"]},
    {"src": ["agent:ops"], "dst": ["tool:other"], "tools": ["*"]},
  ],
  "limits": [{"src": ["agent:ops"], "dst": ["model:llm"], "rpm": 10}],
  "node_owners": {"agent": ["sso:ops"]},
}`
	active := compile(t, doc, "4")
	ops := policy.Node{Kind: identity.KindAgent, Name: "ops"}
	ledger, files := policy.Node{Kind: identity.KindTool, Name: "ledger"}, policy.Node{Kind: identity.KindTool, Name: "files"}
	var evs []audit.Event
	add := func(r policy.Request) { evs = append(evs, record(t, active, "4", len(evs)+1, r)) }
	add(policy.Request{Src: ops, Dst: ledger, Action: policy.ActionTool, Method: "tools/call", Tool: "drop_table"})
	add(policy.Request{Src: ops, Dst: ledger, Action: policy.ActionTool, Method: "tools/call", Tool: "balance"})
	for _, u := range []string{"file:///srv/a/1", "file:///srv/a/2", "file:///srv/a/3", "file:///srv/b"} {
		add(policy.Request{Src: ops, Dst: files, Action: policy.ActionResource, Method: "resources/read", Resource: u})
	}
	sg := suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "4"}, evs)
	p := compile(t, sg.Document, "s")
	for _, want := range []string{`"approval": "group:oncall", "approval_timeout": "10m0s"`, `"file:///srv/a/*", //`, `"file:///srv/b", //`,
		`"resources/read file:///srv/a/1"`, `"limits": [{"src": ["agent:ops"], "dst": ["model:llm"], "rpm": 10}]`} {
		if !strings.Contains(sg.Document, want) {
			t.Errorf("no %s in\n%s", want, sg.Document)
		}
	}
	if !slices.Equal(sg.Carried, []string{"groups", "limits", "node_owners"}) {
		t.Errorf("carried %v", sg.Carried)
	}
	// The held call is still held, by the grant that holds it.
	d := p.Decide(policy.Request{Src: ops, Dst: ledger, Action: policy.ActionTool, Method: "tools/call", Tool: "drop_table"})
	if !d.Allow || d.Approval != "group:oncall" {
		t.Errorf("drop_table under the suggestion: %+v", d)
	}
	if d := p.Decide(policy.Request{Src: ops, Dst: ledger, Action: policy.ActionTool, Method: "tools/call", Tool: "history"}); d.Allow {
		t.Error("the suggestion allows a tool nobody called")
	}
	// Unused: the grant to tool:other, which saw no traffic; unless the
	// report is limited to the destinations the evidence holds.
	if len(sg.UnusedGrants) != 1 || sg.UnusedGrants[0].Index != 3 || len(sg.UnusedEntries) != 0 {
		t.Errorf("unused %+v %+v", sg.UnusedGrants, sg.UnusedEntries)
	}
	sg = suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "4", SeenDestinationsOnly: true}, evs)
	if len(sg.UnusedGrants) != 0 {
		t.Errorf("unused with SeenDestinationsOnly %+v", sg.UnusedGrants)
	}
}

func TestSuggestWithoutEvidenceOrWithTooMuch(t *testing.T) {
	// No events: an empty policy that compiles, everything unused.
	active := compile(t, activeDoc, "7")
	sg := suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "7"}, nil)
	if p := compile(t, sg.Document, "s"); p == nil || len(sg.Grants) != 0 || len(sg.UnusedGrants) != 4 {
		t.Fatalf("suggestion from nothing: %+v", sg)
	}
	// More distinct requests than it keeps: an error, not a partial policy.
	s := NewSuggester(SuggestOptions{Active: active, ActiveVersion: "7", MaxShapes: 3})
	evs := suggestTraffic(t, &recorder{pol: active, version: "7"})
	for i := range evs {
		s.Add(&evs[i])
	}
	if _, err := s.Suggest(); !errors.Is(err, ErrTooManyShapes) {
		t.Fatalf("Suggest over the bound: %v", err)
	}
}

// Argument bounds are written so that CEL and HuJSON read them as they
// were observed: strings with quotes and control characters, keys that
// are not identifiers.
func TestSuggestBoundsOddStringsAndKeys(t *testing.T) {
	const doc = `{"grants": [{"src": ["agent:bot"], "dst": ["tool:ledger"], "tools": ["set"], "when": "args.mode != 'x' && args['x-y'] != 'q'"}]}`
	active := compile(t, doc, "1")
	bot, ledger := policy.Node{Kind: identity.KindAgent, Name: "bot"}, policy.Node{Kind: identity.KindTool, Name: "ledger"}
	var evs []audit.Event
	for _, mode := range []string{"a\u0001b", `c"d`, "plain\n"} {
		r := policy.Request{Src: bot, Dst: ledger, Action: policy.ActionTool, Method: "tools/call", Tool: "set",
			Args: map[string]any{"mode": mode, "x-y": "z"}}
		evs = append(evs, record(t, active, "1", len(evs)+1, r))
	}
	sg := suggestFrom(t, SuggestOptions{Active: active, ActiveVersion: "1", Args: true}, evs)
	p := compile(t, sg.Document, "s")
	if !strings.Contains(sg.Document, `args.mode in [\"a\\u0001b\", \"c\\\"d\", \"plain\\n\"]`) || !strings.Contains(sg.Document, `args[\"x-y\"] == \"z\"`) {
		t.Fatalf("bounds:\n%s", sg.Document)
	}
	for mode, want := range map[string]bool{"a\u0001b": true, `c"d`: true, "plain\n": true, "plain": false} {
		d := p.Decide(policy.Request{Src: bot, Dst: ledger, Action: policy.ActionTool, Method: "tools/call", Tool: "set",
			Args: map[string]any{"mode": mode, "x-y": "z"}})
		if d.Allow != want {
			t.Errorf("mode %q: %+v", mode, d)
		}
	}
}
