// Package replay decides the recorded requests of the audit trail again
// under a candidate policy, to say before a policy is applied which
// decisions it would change (`agentmesh policy replay`).
//
// A request event can be decided again only from what the trail kept of
// it: its source, destination, method and item (tool, resource, prompt,
// model, path) and its audit.Basis, which the gateway records with every
// request the policy decided (the tags of both sides at the time, the
// method the policy saw, and the argument values at the paths the policy's
// whens read, see policy.AuditArgPaths). The engine never guesses: an event
// it cannot decide exactly as the gateway did is counted as not judged,
// with the reason (no basis recorded, a when reading arguments the trail
// does not keep, kept arguments over their size bound, one request that
// decided several resources, a source that is not a mesh identity).
// A request made with a delegation (audit.OnBehalfOf) is decided with
// it, and, as the gateway does, for its person too; one made through a
// sub-agent is not judged (the tags of the agents between are not
// recorded).
// Requests the gateway answered without asking the policy (the handshake,
// lists, malformed or oversized input, admission refusals) or refused
// after the policy allowed them (tool pins, model limits) are not policy
// decisions: they are counted apart, by reason, and never replayed.
//
// The engine also checks itself: given the policy that was active (and its
// version), and any earlier version Options.Version can supply, every
// event recorded under a known version is decided again by that version's
// policy and must come out exactly as recorded (decision, reason and
// rule). A difference is a bug, in replay or in what the gateway recorded,
// and is reported as a Disagreement, never folded into the changes.
//
// Usage:
//
//	e := replay.New(replay.Options{Candidate: cand, Active: act, ActiveVersion: "7"})
//	for each request event ev, oldest first: e.Add(&ev)
//	rep := e.Report()
//
// Suggester (suggest.go) reads the same events to propose a
// least-privilege policy (`agentmesh policy suggest`), and checks it with
// an Engine before returning it.
//
// The engine holds memory in proportion to the number of distinct change
// groups (at most MaxGroups) and not-judged reasons, not to the number of
// events.
package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// DefaultExamples is how many example event ids a group keeps by default.
const DefaultExamples = 3

// MaxGroups bounds the change groups an engine keeps.
const MaxGroups = 10_000

// maxDisagreements bounds the disagreements a report lists; Report counts
// them all.
const maxDisagreements = 100

// Options configures an Engine.
type Options struct {
	// Candidate is the policy the recorded requests are decided under. A
	// nil Candidate denies everything (no_policy), as a gateway without
	// one does.
	Candidate *policy.Policy
	// Active and ActiveVersion, when Active is set, are the policy in
	// force and its version label as events carry it: every event
	// recorded under ActiveVersion must be decided again by Active exactly
	// as recorded (see Disagreement).
	Active        *policy.Policy
	ActiveVersion string
	// Version, when set, returns the policy an event's PolicyVersion
	// names, or nil when it cannot: events recorded under earlier
	// versions are then checked against theirs as those under the active
	// one are (it is asked once per version).
	Version func(label string) *policy.Policy
	// Examples is how many example event ids each change group keeps; 0
	// means DefaultExamples.
	Examples int
}

// Engine replays events. It is not safe for concurrent use.
type Engine struct {
	opts    Options
	report  Report
	changes map[changeKey]*Change
	skipped map[string]int64
	unjudge map[string]int64
	// caches of parsed record parts, which repeat across events
	nodes map[string]nodeEntry
	kept  map[string]*policy.KeptArgs
	// versions caches Options.Version's answers, nil included.
	versions map[string]*policy.Policy
}

type nodeEntry struct {
	kind identity.Kind
	name identity.Name
	ok   bool
}

type changeKey struct {
	src, dst, item, from, to string
}

// Report is what a replay found.
type Report struct {
	// Events is the number of request events read (attempts: an
	// aggregated event counts for every attempt it stands for).
	Events int64 `json:"events"`
	// Judged are those decided again under the candidate; Changed, those
	// of them whose decision (allow or deny) would change; ReasonChanged,
	// denials that would stay denials for another reason.
	Judged        int64 `json:"judged"`
	Changed       int64 `json:"changed"`
	ReasonChanged int64 `json:"reason_changed"`
	// Changes groups the changed decisions, largest group first; changes
	// that would open a group beyond MaxGroups are only counted, in
	// Ungrouped (peers choose tool names: a group per name must not
	// grow without bound).
	Changes   []*Change `json:"changes"`
	Ungrouped int64     `json:"ungrouped"`
	// NotJudged counts the policy decisions that could not be decided
	// again exactly, by why; Skipped, the events that were not policy
	// decisions, by why.
	NotJudged []Count `json:"not_judged"`
	Skipped   []Count `json:"skipped"`
	// Disagreements are events recorded under the active policy that it
	// decides differently now: each is a bug (at most maxDisagreements
	// listed; DisagreementCount counts them all).
	Disagreements     []Disagreement `json:"disagreements"`
	DisagreementCount int64          `json:"disagreement_count"`
	// Checked is how many events were checked against the policy they
	// were recorded under (the active one, and others Options.Version
	// gave), and CheckedVersions those versions.
	Checked         int64    `json:"checked"`
	CheckedVersions []string `json:"checked_versions"`
}

// Change is one group of recorded decisions the candidate would change.
type Change struct {
	Src      string    `json:"src"`
	Dst      string    `json:"dst"`
	Item     string    `json:"item"` // tool:NAME, resource:URI, prompt:NAME, model:NAME, path:METHOD PATH
	From     string    `json:"from"` // "allow" or "deny (reason)"
	To       string    `json:"to"`
	Count    int64     `json:"count"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Examples []string  `json:"examples"` // event ids
}

// Count is a number of events with a reason.
type Count struct {
	Why   string `json:"why"`
	Count int64  `json:"count"`
}

// Disagreement is an event the policy it was recorded under decides
// differently now than the gateway recorded: replay disagrees with the
// recorded decision.
type Disagreement struct {
	EventID  string `json:"event_id"`
	Version  string `json:"policy_version"`
	Recorded string `json:"recorded"`
	Replayed string `json:"replayed"`
}

// New returns an engine.
func New(opts Options) *Engine {
	if opts.Examples <= 0 {
		opts.Examples = DefaultExamples
	}
	return &Engine{
		opts: opts, changes: make(map[changeKey]*Change), skipped: make(map[string]int64),
		unjudge: make(map[string]int64), nodes: make(map[string]nodeEntry), kept: make(map[string]*policy.KeptArgs),
		versions: make(map[string]*policy.Policy),
	}
}

// maxVersions bounds the versions an engine asks Options.Version about.
const maxVersions = 1 << 10

// recordedPolicy is the policy an event recorded under label was decided
// by, when known.
func (e *Engine) recordedPolicy(label string) *policy.Policy {
	if e.opts.Active != nil && label == e.opts.ActiveVersion {
		return e.opts.Active
	}
	if e.opts.Version == nil || label == "" {
		return nil
	}
	p, ok := e.versions[label]
	if !ok && len(e.versions) < maxVersions {
		p = e.opts.Version(label)
		e.versions[label] = p
	}
	return p
}

// policyReasons are the reasons only a policy decision gives.
var policyReasons = map[reason.Code]bool{
	reason.Allowed: true, reason.NoGrant: true, reason.NotGranted: true, reason.WhenFalse: true,
	reason.WhenError: true, reason.BadRequest: true, reason.UnsafeURI: true, reason.NonCanonicalURI: true,
	reason.CaseVariantKey: true,
}

// Add replays one event. Events that are not request events are ignored.
func (e *Engine) Add(ev *audit.Event) {
	if ev.Kind != audit.KindRequest {
		return
	}
	n := ev.Attempts()
	e.report.Events += n
	if why, decided := classify(ev); why != "" {
		if decided {
			e.unjudge[why] += n
		} else {
			e.skipped[why] += n
		}
		return
	}
	b := ev.Basis
	req, why := e.request(ev)
	if why != "" {
		e.unjudge[why] += n
		return
	}
	kept := e.keptArgs(b.ArgPaths)
	if recorded := e.recordedPolicy(ev.PolicyVersion); recorded != nil {
		// A when reading what the trail does not keep (a secret-named
		// key) cannot be checked; the candidate's replay counts it.
		if d, judged := decideRecorded(recorded, req, kept); judged {
			e.report.Checked += n
			if !slices.Contains(e.report.CheckedVersions, ev.PolicyVersion) {
				e.report.CheckedVersions = append(e.report.CheckedVersions, ev.PolicyVersion)
			}
			if got := exact(d); got != recordedExact(ev) {
				e.disagree(ev, got)
			}
		}
	}
	d, judged := decideRecorded(e.opts.Candidate, req, kept)
	if !judged {
		e.unjudge["a when reads arguments the trail does not keep (candidate grant "+strconv.Itoa(d.Grant)+")"] += n
		return
	}
	e.report.Judged += n
	was := ev.Decision == audit.Allow
	if was == d.Allow {
		if !was && d.Reason != ev.Reason {
			e.report.ReasonChanged += n
		}
		return
	}
	e.report.Changed += n
	k := changeKey{src: identity.Short(ev.Src), dst: identity.Short(ev.Dst), item: item(&req),
		from: label(ev.Decision == audit.Allow, ev.Reason), to: label(d.Allow, d.Reason)}
	c := e.changes[k]
	if c == nil && len(e.changes) >= MaxGroups {
		e.report.Ungrouped += n
		return
	}
	if c == nil {
		c = &Change{Src: k.src, Dst: k.dst, Item: k.item, From: k.from, To: k.to, First: ev.Time}
		e.changes[k] = c
	}
	c.Count += n
	if ev.Time.Before(c.First) {
		c.First = ev.Time
	}
	if ev.Time.After(c.Last) {
		c.Last = ev.Time
	}
	if len(c.Examples) < e.opts.Examples {
		c.Examples = append(c.Examples, ev.ID)
	}
}

// classify says why a request event cannot be decided again: "" when it
// can; otherwise the reason, with decided true when the event was a
// policy decision (not judged) and false when it was not one (skipped).
func classify(ev *audit.Event) (why string, decided bool) {
	b := ev.Basis
	switch {
	case b == nil && ev.Decision == audit.Allow && ev.Reason == reason.Allowed && ev.Tool == "" && ev.Resource == "" && ev.Prompt == "" && ev.Model == "":
		return "allowed without a policy decision (handshake, lists, notifications, responses)", false
	case b == nil && ev.Method == "tasks/cancel":
		return "allowed without a policy decision (a task's owner cancels it)", false
	case !policyReasons[ev.Reason]:
		if b != nil {
			return "refused after the policy allowed it: " + string(ev.Reason), false
		}
		return "not decided by the policy: " + reasonText(ev.Reason), false
	case b == nil:
		return "no basis recorded (a gateway older than replay, or no policy then)", true
	case b.Unjudged != "":
		return "the gateway could not record its basis: " + b.Unjudged, true
	}
	return "", true
}

func (e *Engine) disagree(ev *audit.Event, replayed string) {
	e.report.DisagreementCount += ev.Attempts()
	if len(e.report.Disagreements) < maxDisagreements {
		e.report.Disagreements = append(e.report.Disagreements, Disagreement{EventID: ev.ID, Version: ev.PolicyVersion, Recorded: recordedExact(ev), Replayed: replayed})
	}
}

// exact is a decision as an event records it: decision, reason, rule.
func exact(d policy.Decision) string {
	s := "deny"
	if d.Allow {
		s = "allow"
	}
	s += " " + string(d.Reason)
	if d.Grant >= 0 {
		s += " rule " + strconv.Itoa(d.Grant)
	}
	return s
}

func recordedExact(ev *audit.Event) string {
	s := string(ev.Decision) + " " + string(ev.Reason)
	if ev.Rule != "" {
		s += " rule " + ev.Rule
	}
	return s
}

func label(allow bool, why reason.Code) string {
	if allow {
		return "allow"
	}
	return "deny (" + string(why) + ")"
}

func reasonText(c reason.Code) string {
	if c == "" {
		return "no reason"
	}
	return string(c)
}

// request rebuilds the policy request an event records, or says why it
// cannot.
func (e *Engine) request(ev *audit.Event) (policy.Request, string) {
	b := ev.Basis
	var r policy.Request
	src, ok := e.node(ev.Src)
	if !ok {
		return r, "the source is not a mesh identity"
	}
	dst, ok := e.node(ev.Dst)
	if !ok {
		return r, "the destination is not a mesh identity"
	}
	srcTags, err1 := identity.ParseTags(b.SrcTags)
	dstTags, err2 := identity.ParseTags(b.DstTags)
	if err1 != nil || err2 != nil {
		return r, "the recorded tags do not parse"
	}
	// A login recorded before gateways folded logins to lower case is
	// decided as a gateway would decide it now.
	r.Src = policy.Node{Kind: src.kind, Name: src.name, Tags: srcTags, User: identity.LowerLogin(b.SrcUser)}
	r.Dst = policy.Node{Kind: dst.kind, Name: dst.name, Tags: dstTags}
	r.Method = ev.Method
	if b.Method != "" {
		r.Method = b.Method
	}
	r.HTTPMethod, r.Path, r.Template = b.HTTPMethod, b.Path, b.Template
	switch {
	case ev.Tool != "":
		r.Action, r.Tool = policy.ActionTool, ev.Tool
	case ev.Resource != "":
		r.Action, r.Resource = policy.ActionResource, ev.Resource
	case ev.Prompt != "":
		r.Action, r.Prompt = policy.ActionPrompt, ev.Prompt
	case ev.Model != "":
		r.Action, r.Model = policy.ActionModel, ev.Model
	case b.HTTPMethod != "" && b.Path != "":
		r.Action = policy.ActionPath
	default:
		return r, "the event names no tool, resource, prompt, model or path"
	}
	if o := ev.OnBehalfOf; o != nil {
		if len(o.Chain) != 2 {
			// The gateway also asked for every agent between the person
			// and the caller, whose tags the event does not record.
			return r, "a delegated request through a sub-agent"
		}
		r.Delegation = &policy.Delegation{User: o.User, Chain: o.Chain, Depth: len(o.Chain) - 1}
	}
	if b.Args != "" {
		dec := json.NewDecoder(strings.NewReader(b.Args))
		dec.UseNumber() // as the gateway's strict decoder reads arguments
		if err := dec.Decode(&r.Args); err != nil || dec.More() {
			return r, "the kept arguments do not decode"
		}
	}
	return r, ""
}

func (e *Engine) node(s string) (nodeEntry, bool) {
	if n, ok := e.nodes[s]; ok {
		return n, n.ok
	}
	id, err := identity.Parse(s)
	n := nodeEntry{kind: id.Kind, name: id.Name, ok: err == nil}
	if len(e.nodes) < 1<<16 {
		e.nodes[s] = n
	}
	return n, n.ok
}

func (e *Engine) keptArgs(paths []string) *policy.KeptArgs {
	if len(paths) == 0 {
		return nil
	}
	key := strings.Join(paths, "\x00")
	if k, ok := e.kept[key]; ok {
		return k
	}
	k := policy.ParseKeptArgs(paths)
	if len(e.kept) < 1<<10 {
		e.kept[key] = k
	}
	return k
}

// item names what a request was about, for a change group.
func item(r *policy.Request) string {
	switch r.Action {
	case policy.ActionTool:
		return "tool:" + r.Tool
	case policy.ActionResource:
		return "resource:" + r.Resource
	case policy.ActionPrompt:
		return "prompt:" + r.Prompt
	case policy.ActionModel:
		return "model:" + r.Model
	}
	return "path:" + r.HTTPMethod + " " + r.Path
}

// Report returns what the engine found so far: changes largest group first
// (then by source, destination, item), counts largest first.
func (e *Engine) Report() Report {
	rep := e.report
	rep.Changes = make([]*Change, 0, len(e.changes))
	for _, c := range e.changes {
		cc := *c
		cc.Examples = slices.Clone(c.Examples)
		rep.Changes = append(rep.Changes, &cc)
	}
	slices.SortFunc(rep.Changes, func(a, b *Change) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Src+"\x00"+a.Dst+"\x00"+a.Item+"\x00"+a.From+"\x00"+a.To, b.Src+"\x00"+b.Dst+"\x00"+b.Item+"\x00"+b.From+"\x00"+b.To)
	})
	rep.NotJudged, rep.Skipped = counts(e.unjudge), counts(e.skipped)
	rep.Disagreements = slices.Clone(rep.Disagreements)
	rep.CheckedVersions = slices.Clone(rep.CheckedVersions)
	slices.Sort(rep.CheckedVersions)
	return rep
}

func counts(m map[string]int64) []Count {
	out := make([]Count, 0, len(m))
	for why, n := range m {
		out = append(out, Count{Why: why, Count: n})
	}
	slices.SortFunc(out, func(a, b Count) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Why, b.Why)
	})
	return out
}

// NotJudgedTotal is the number of policy decisions that could not be
// decided again.
func (r *Report) NotJudgedTotal() int64 {
	var n int64
	for _, c := range r.NotJudged {
		n += c.Count
	}
	return n
}

// Summary is one line for people.
func (r *Report) Summary() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d request events: %d judged, %d would change", r.Events, r.Judged, r.Changed)
	if r.ReasonChanged > 0 {
		fmt.Fprintf(&b, " (and %d denials for another reason)", r.ReasonChanged)
	}
	fmt.Fprintf(&b, ", %d not judged", r.NotJudgedTotal())
	var skipped int64
	for _, c := range r.Skipped {
		skipped += c.Count
	}
	fmt.Fprintf(&b, ", %d not policy decisions", skipped)
	return b.String()
}

// decideRecorded decides r under pol as the gateway did: for a request made
// with a delegation (of one link: request refuses longer chains), the
// policy must also allow the person the same request, else the gateway
// refused it with delegation_exceeds_grantor after the policy allowed the
// caller. (Its scope is the delegation's, not the policy's: a request
// outside it was refused before and is not replayed.)
func decideRecorded(pol *policy.Policy, r policy.Request, kept *policy.KeptArgs) (policy.Decision, bool) {
	d, judged := pol.DecideRecorded(r, kept)
	if !judged || !d.Allow || r.Delegation == nil {
		return d, judged
	}
	g := r
	g.Src, g.Delegation = policy.Node{Kind: identity.KindAgent, User: r.Delegation.User}, nil
	gd, judged := pol.DecideRecorded(g, kept)
	if !judged {
		return gd, false
	}
	if !gd.Allow {
		d.Allow, d.Reason, d.When, d.Approval, d.ApprovalTimeout = false, reason.DelegationExceedsGrantor, policy.WhenNone, "", 0
	}
	return d, true
}
