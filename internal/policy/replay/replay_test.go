package replay

import (
	"encoding/json"
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
	"github.com/agentmesh/agentmesh/internal/reason"
)

const activeDoc = `{
  "grants": [
    {"src": ["tag:tellers"], "dst": ["tool:ledger"], "tools": ["transfer"], "when": "args.amount <= 1000"},
    {"src": ["tag:senior"], "dst": ["tool:ledger"], "tools": ["transfer", "refund"]},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["read_*"], "resources": ["ledger://books/*"]},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["login"], "when": "args.password != ''"},
  ],
}`

// narrowedDoc takes refund away from seniors and caps transfers at 500.
const narrowedDoc = `{
  "grants": [
    {"src": ["tag:tellers"], "dst": ["tool:ledger"], "tools": ["transfer"], "when": "args.amount <= 500"},
    {"src": ["tag:senior"], "dst": ["tool:ledger"], "tools": ["transfer"]},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["read_*"], "resources": ["ledger://books/*"]},
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["login"], "when": "args.password != ''"},
  ],
}`

const td = "spiffe://mesh.test/"

var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

// recorder makes request events as a gateway does: it decides with the
// whole arguments and records the basis with admission.Basis, the
// gateways' own function.
type recorder struct {
	pol     *policy.Policy
	version string
	n       int
}

func (rc *recorder) call(t testing.TB, src string, tags []identity.Tag, toolName, args string) audit.Event {
	var a map[string]any
	if args != "" {
		dec := json.NewDecoder(strings.NewReader(args))
		dec.UseNumber()
		if err := dec.Decode(&a); err != nil {
			t.Fatal(err)
		}
	}
	r := policy.Request{
		Src:    policy.Node{Kind: identity.KindAgent, Name: identity.Name(src), Tags: tags},
		Dst:    policy.Node{Kind: identity.KindTool, Name: "ledger"},
		Action: policy.ActionTool, Method: "tools/call", Tool: toolName, Args: a,
	}
	d := rc.pol.Decide(r)
	rc.n++
	ev := audit.Event{
		V: audit.SchemaVersion, ID: fmt.Sprintf("%032x", rc.n), Time: t0.Add(time.Duration(rc.n) * time.Second),
		Kind: audit.KindRequest, Src: td + "agent/" + src, Dst: td + "tool/ledger", Method: "tools/call", Tool: toolName,
		Decision: audit.Deny, Reason: d.Reason, PolicyVersion: rc.version, Basis: admission.Basis(&r, "tools/call", rc.pol),
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

func compile(t testing.TB, doc, version string) *policy.Policy {
	p, err := policy.Compile([]byte(doc), version)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// traffic records a mixed day: tellers within and over both caps, a
// senior refunding, an auditor reading and logging in, and a teller whose
// tags the registry has changed since.
func traffic(t testing.TB, rc *recorder) []audit.Event {
	tellers, senior := []identity.Tag{"tag:tellers"}, []identity.Tag{"tag:senior"}
	var evs []audit.Event
	for i := range 50 {
		evs = append(evs, rc.call(t, "teller", tellers, "transfer", fmt.Sprintf(`{"amount":%d,"memo":"m%d"}`, i*40, i)))
	}
	for range 4 {
		evs = append(evs, rc.call(t, "boss", senior, "refund", `{"amount":5}`))
	}
	evs = append(evs, rc.call(t, "auditor", nil, "read_books", ""))
	evs = append(evs, rc.call(t, "auditor", nil, "login", `{"password":"hunter2"}`))
	evs = append(evs, rc.call(t, "auditor", nil, "delete", ""))
	return evs
}

func TestReplayOfTheActivePolicyReproducesEveryDecision(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	e := New(Options{Candidate: active, Active: active, ActiveVersion: "7"})
	for _, ev := range traffic(t, rc) {
		e.Add(&ev)
	}
	rep := e.Report()
	if rep.DisagreementCount != 0 || rep.Changed != 0 || rep.ReasonChanged != 0 {
		t.Fatalf("the active policy replays with differences: %+v", rep)
	}
	// The login's when reads a secret-named key: never kept, never judged.
	if rep.Events != 57 || rep.Judged != 56 || rep.Checked != 56 || rep.NotJudgedTotal() != 1 {
		t.Fatalf("report %s; not judged %+v", rep.Summary(), rep.NotJudged)
	}
	if !strings.Contains(rep.NotJudged[0].Why, "does not keep") {
		t.Fatalf("not judged for %q", rep.NotJudged[0].Why)
	}
}

func TestReplayOfANarrowedPolicyListsExactlyTheNewlyDeniedCalls(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	evs := traffic(t, rc)
	e := New(Options{Candidate: compile(t, narrowedDoc, "candidate"), Active: active, ActiveVersion: "7"})
	for i := range evs {
		e.Add(&evs[i])
	}
	rep := e.Report()
	if rep.DisagreementCount != 0 {
		t.Fatalf("disagreements: %+v", rep.Disagreements)
	}
	// Transfers of 520..1000 (i = 13..25) lose their grant; all four refunds do.
	if len(rep.Changes) != 2 {
		t.Fatalf("changes %+v", rep.Changes)
	}
	transfers, refunds := rep.Changes[0], rep.Changes[1]
	if transfers.Src != "agent:teller" || transfers.Item != "tool:transfer" || transfers.From != "allow" || transfers.To != "deny (when_false)" || transfers.Count != 13 {
		t.Fatalf("transfers group %+v", transfers)
	}
	if !transfers.First.Equal(evs[13].Time) || !transfers.Last.Equal(evs[25].Time) || len(transfers.Examples) != DefaultExamples || transfers.Examples[0] != evs[13].ID {
		t.Fatalf("transfers group bounds %+v", transfers)
	}
	if refunds.Src != "agent:boss" || refunds.Item != "tool:refund" || refunds.To != "deny (not_granted)" || refunds.Count != 4 {
		t.Fatalf("refunds group %+v", refunds)
	}
	if rep.Changed != 17 {
		t.Fatalf("changed %d, want 17", rep.Changed)
	}
}

func TestReplayDecidesByTheTagsRecordedThen(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	// Recorded while the boss was tag:senior; whatever the registry says
	// now, replay judges by the tags of the time.
	ev := rc.call(t, "boss", []identity.Tag{"tag:senior"}, "refund", "")
	e := New(Options{Candidate: active, Active: active, ActiveVersion: "7"})
	e.Add(&ev)
	if rep := e.Report(); rep.Judged != 1 || rep.Changed != 0 || rep.DisagreementCount != 0 {
		t.Fatalf("report %+v", rep)
	}
	if ev.Basis.SrcTags[0] != "tag:senior" {
		t.Fatalf("basis %+v", ev.Basis)
	}
}

func TestReplaySaysWhatItCannotJudgeAndWhatIsNoPolicyDecision(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	noBasis := rc.call(t, "teller", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":1}`)
	noBasis.Basis = nil
	over := rc.call(t, "teller", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":1}`)
	over.Basis.Args, over.Basis.Unjudged = "", audit.BasisArgsOverLimit
	malformed := audit.Event{Kind: audit.KindRequest, ID: "m", Method: "tools/call", Decision: audit.Deny, Reason: reason.Malformed}
	pinned := rc.call(t, "boss", []identity.Tag{"tag:senior"}, "refund", "")
	pinned.Decision, pinned.Reason = audit.Deny, reason.ToolChanged
	hello := audit.Event{Kind: audit.KindRequest, ID: "i", Method: "initialize", Decision: audit.Allow, Reason: reason.Allowed}
	admin := audit.Event{Kind: audit.KindAdmin, ID: "a"}
	// A when the candidate adds on an argument the trail never kept.
	cand := compile(t, strings.Replace(activeDoc, `"tools": ["transfer", "refund"]}`, `"tools": ["transfer", "refund"], "when": "args.reason != ''"}`, 1), "c")
	e := New(Options{Candidate: cand})
	for _, ev := range []audit.Event{noBasis, over, malformed, pinned, hello, admin} {
		e.Add(&ev)
	}
	seniorRefund := rc.call(t, "boss", []identity.Tag{"tag:senior"}, "refund", "")
	e.Add(&seniorRefund)
	rep := e.Report()
	if rep.Events != 6 || rep.Judged != 0 || rep.NotJudgedTotal() != 3 {
		t.Fatalf("report %s: %+v", rep.Summary(), rep.NotJudged)
	}
	whys := fmt.Sprint(rep.NotJudged, rep.Skipped)
	for _, want := range []string{"no basis recorded", "args_over_limit", "does not keep (candidate grant 1)",
		"not decided by the policy: malformed", "after the policy allowed it: tool_changed", "handshake"} {
		if !strings.Contains(whys, want) {
			t.Errorf("report does not say %q: %s", want, whys)
		}
	}
}

func TestReplayReportsADisagreementWithTheRecordAsABug(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	ev := rc.call(t, "teller", []identity.Tag{"tag:tellers"}, "transfer", `{"amount":10}`)
	ev.Decision, ev.Reason, ev.Rule = audit.Deny, reason.WhenFalse, "0" // not what the policy says
	older := ev
	older.PolicyVersion = "6" // another version may well have decided otherwise
	e := New(Options{Candidate: active, Active: active, ActiveVersion: "7"})
	e.Add(&ev)
	e.Add(&older)
	rep := e.Report()
	if rep.DisagreementCount != 1 || rep.Disagreements[0].EventID != ev.ID ||
		rep.Disagreements[0].Recorded != "deny when_false rule 0" || rep.Disagreements[0].Replayed != "allow allowed rule 0" {
		t.Fatalf("disagreements %+v", rep.Disagreements)
	}
}

// BenchmarkReplay replays synthetic recorded traffic (ns/op is per event):
// tool calls of several agents whose grants have whens on a kept argument.
func BenchmarkReplay(b *testing.B) {
	active := compile(b, activeDoc, "7")
	cand := compile(b, narrowedDoc, "c")
	rc := &recorder{pol: active, version: "7"}
	evs := make([]audit.Event, 0, 1000)
	for i := range 1000 {
		switch i % 4 {
		case 0, 1:
			evs = append(evs, rc.call(b, "teller"+strconv.Itoa(i%13), []identity.Tag{"tag:tellers"}, "transfer", fmt.Sprintf(`{"amount":%d,"memo":"x"}`, i)))
		case 2:
			evs = append(evs, rc.call(b, "boss", []identity.Tag{"tag:senior"}, "refund", `{"amount":5}`))
		default:
			evs = append(evs, rc.call(b, "auditor", nil, "read_books", ""))
		}
	}
	e := New(Options{Candidate: cand, Active: active, ActiveVersion: "7"})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Add(&evs[i%len(evs)])
	}
	b.StopTimer()
	if rep := e.Report(); rep.DisagreementCount != 0 {
		b.Fatalf("disagreements: %+v", rep.Disagreements[0])
	}
}

// BenchmarkReplayFromLines adds what `agentmesh policy replay` pays per
// event on top of the engine: decoding the event's JSON line as the
// coordinator streams it.
func BenchmarkReplayFromLines(b *testing.B) {
	active := compile(b, activeDoc, "7")
	cand := compile(b, narrowedDoc, "c")
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
	e := New(Options{Candidate: cand, Active: active, ActiveVersion: "7"})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var ev audit.Event
		if err := json.Unmarshal(lines[i%len(lines)], &ev); err != nil {
			b.Fatal(err)
		}
		e.Add(&ev)
	}
}

func TestReplayDecidesModelRequestsAndPaths(t *testing.T) {
	const doc = `{"grants": [{"src": ["agent:bot"], "dst": ["model:llm"], "models": ["llama-*"], "paths": ["POST /v1/audio/*"], "when": "!has(args.max_tokens) || args.max_tokens <= 100"}]}`
	pol := compile(t, doc, "3")
	var evs []audit.Event
	for i, tc := range []struct {
		model, httpMethod, path, args string
	}{
		{"llama-3", "POST", "/v1/chat/completions", `{"max_tokens":50,"messages":[]}`},
		{"llama-3", "POST", "/v1/chat/completions", `{"max_tokens":500}`},
		{"gpt-x", "POST", "/v1/chat/completions", `{}`},
		{"", "POST", "/v1/audio/speech", ``},
		{"", "POST", "/v1/files", ``},
	} {
		var a map[string]any
		if tc.args != "" {
			dec := json.NewDecoder(strings.NewReader(tc.args))
			dec.UseNumber()
			if err := dec.Decode(&a); err != nil {
				t.Fatal(err)
			}
		}
		r := policy.Request{
			Src: policy.Node{Kind: identity.KindAgent, Name: "bot"}, Dst: policy.Node{Kind: identity.KindModel, Name: "llm"},
			Action: policy.ActionModel, Method: tc.path, Model: tc.model, HTTPMethod: tc.httpMethod, Path: tc.path, Args: a,
		}
		if tc.model == "" {
			r.Action = policy.ActionPath
		}
		d := pol.Decide(r)
		ev := audit.Event{V: audit.SchemaVersion, ID: fmt.Sprintf("%032x", i+1), Time: t0, Kind: audit.KindRequest,
			Src: td + "agent/bot", Dst: td + "model/llm", Method: tc.httpMethod + " " + tc.path, Model: tc.model,
			Decision: audit.Deny, Reason: d.Reason, PolicyVersion: "3", Basis: admission.Basis(&r, tc.httpMethod+" "+tc.path, pol)}
		if d.Allow {
			ev.Decision = audit.Allow
		}
		if d.Grant >= 0 {
			ev.Rule = strconv.Itoa(d.Grant)
		}
		evs = append(evs, ev)
	}
	e := New(Options{Candidate: compile(t, strings.Replace(doc, "<= 100", "<= 10", 1), "c"), Active: pol, ActiveVersion: "3"})
	for i := range evs {
		e.Add(&evs[i])
	}
	rep := e.Report()
	if rep.DisagreementCount != 0 || rep.Checked != 5 || rep.Judged != 5 {
		t.Fatalf("report %s %+v %+v", rep.Summary(), rep.Disagreements, rep.NotJudged)
	}
	if len(rep.Changes) != 1 || rep.Changes[0].Item != "model:llama-3" || rep.Changes[0].Count != 1 || rep.Changes[0].To != "deny (when_false)" {
		t.Fatalf("changes %+v", rep.Changes)
	}
}

func TestReplayChecksEventsAgainstThePolicyOfTheirVersion(t *testing.T) {
	v1, v2 := compile(t, narrowedDoc, "1"), compile(t, activeDoc, "2")
	old, cur := &recorder{pol: v1, version: "1"}, &recorder{pol: v2, version: "2", n: 1000}
	evs := append(traffic(t, old), traffic(t, cur)...)
	asked := 0
	e := New(Options{Candidate: v2, Active: v2, ActiveVersion: "2", Version: func(label string) *policy.Policy {
		asked++
		if label == "1" {
			return v1
		}
		return nil
	}})
	for i := range evs {
		e.Add(&evs[i])
	}
	rep := e.Report()
	if rep.DisagreementCount != 0 || rep.Checked != 112 || !slices.Equal(rep.CheckedVersions, []string{"1", "2"}) || asked != 1 {
		t.Fatalf("checked %d under %q (asked %d): %+v", rep.Checked, rep.CheckedVersions, asked, rep.Disagreements)
	}
	// Under v2, the calls v1 denied and v2 allows are changes, not bugs.
	if rep.Changed != 17 {
		t.Fatalf("changed %d: %+v", rep.Changed, rep.Changes)
	}
}

func TestReplayBoundsItsGroups(t *testing.T) {
	active := compile(t, activeDoc, "7")
	rc := &recorder{pol: active, version: "7"}
	ev := rc.call(t, "auditor", nil, "delete", "") // not granted
	e := New(Options{Candidate: compile(t, `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"]}]}`, "c")})
	for i := range MaxGroups + 5 {
		ev.Tool = "t" + strconv.Itoa(i)
		e.Add(&ev)
	}
	rep := e.Report()
	if len(rep.Changes) != MaxGroups || rep.Ungrouped != 5 || rep.Changed != MaxGroups+5 {
		t.Fatalf("%d groups, %d ungrouped, %d changed", len(rep.Changes), rep.Ungrouped, rep.Changed)
	}
}
