package replay

// Least-privilege suggestions (`agentmesh policy suggest`): a policy that
// grants what the recorded requests of a window actually used and nothing
// more, written with its evidence, checked by this package's own replay
// before it is shown.
//
// Evidence. Only policy decisions that replay can judge count (an event
// with a basis, see classify): the allowed ones are what is granted, the
// denied ones become deny tests. Everything else is counted, by why, in
// NotUsed. Calls the policy allowed and a pin or a limit then refused are
// not evidence of use.
//
// Sources are grouped by their tag set at the time (the basis' src_tags):
// nodes with the same non-empty set are one group and share one set of
// grants, the union of what its members used; a node with no tags is a
// group of its own, by name. Grants always name their sources by name
// (agent:NAME): a tag selector would also grant the same to any node
// given that tag later, which no evidence supports. The tag set is in the
// comment, for an operator who wants to replace the names by a tag.
//
// Globs. Names of one kind (tools, resources, ...) that one group used at
// one destination collapse to PREFIX* only when at least MinGlob of them
// share PREFIX, PREFIX ends at a separator (_ - . / : for names, / for
// resources and paths) and is at least 3 characters long, and no other
// name of that kind seen at that destination in the window (by any source,
// allowed or denied) starts with PREFIX. The longest such prefix wins.
//
// Arguments (Args). For an item whose every allowed call kept the same
// argument paths in its basis, a path whose values are all integers gets
// a range (args.p >= MIN && args.p <= MAX), all strings with at most
// maxStringValues distinct values a set (args.p in [...]), all booleans
// of one value an equality; paths with other values, absent from some
// call, or not kept by some call get no bound. Only values the trail kept
// are read: by the active policy's rule, those its whens read.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailscale/hujson"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// DefaultMinGlob is how many used names a glob must stand for.
const DefaultMinGlob = 3

// DefaultMaxShapes bounds the distinct recorded requests a suggester
// keeps (source, destination, tags, item, kept arguments, decision).
const DefaultMaxShapes = 200_000

// maxStringValues is the most distinct strings an argument bound lists.
const maxStringValues = 5

// maxTests bounds the generated tests.
const maxTests = 2_000

// maxTestEntries bounds the allow or deny entries of one generated test.
const maxTestEntries = 50

// ErrTooManyShapes says the window holds more distinct requests than the
// suggester keeps.
var ErrTooManyShapes = errors.New("too many distinct requests in the window")

// SuggestOptions configures a Suggester.
type SuggestOptions struct {
	// Active is the policy in force (nil: none), whose grants nothing
	// used are reported and whose approvals, limits, pins, groups and
	// audit_args the suggestion keeps.
	Active        *policy.Policy
	ActiveVersion string
	// Args asks for when bounds on argument values.
	Args bool
	// MinGlob is how many names a glob must cover; 0 means
	// DefaultMinGlob, a negative value no globs.
	MinGlob int
	// MaxShapes bounds the distinct requests kept; 0 means
	// DefaultMaxShapes.
	MaxShapes int
	// SeenDestinationsOnly limits the report of unused grants to those
	// about a destination that the evidence holds (for a window read
	// for one destination: grants about others saw no traffic in it).
	SeenDestinationsOnly bool
	// Since is the start of the window, for the header.
	Since time.Time
	// Examples is how many example event ids an item keeps; 0 means
	// DefaultExamples.
	Examples int
}

// Suggester collects the evidence for a suggestion. It is not safe for
// concurrent use.
type Suggester struct {
	opts    SuggestOptions
	parse   *Engine // its request parsing and caches
	events  int64
	notUsed map[string]int64
	shapes  map[shapeKey]*shape
	order   []*shape
	over    bool
}

// shapeKey is one distinct recorded request: what its decision and the
// suggestion depend on.
type shapeKey struct {
	src, dst, method, tool, resource, prompt, model string
	decision, reason, rule, version                 string
	srcTags, dstTags, user, bmethod, httpMethod     string
	path, argPaths, args                            string
	template                                        bool
}

type shape struct {
	ev          audit.Event // the first event, Count the attempts of all
	first, last time.Time
	examples    []string
}

// NewSuggester returns a suggester.
func NewSuggester(o SuggestOptions) *Suggester {
	if o.MinGlob == 0 {
		o.MinGlob = DefaultMinGlob
	}
	if o.MaxShapes <= 0 {
		o.MaxShapes = DefaultMaxShapes
	}
	if o.Examples <= 0 {
		o.Examples = DefaultExamples
	}
	return &Suggester{opts: o, parse: New(Options{}), notUsed: make(map[string]int64), shapes: make(map[shapeKey]*shape)}
}

// Add reads one event; events that are not request events are ignored.
func (s *Suggester) Add(ev *audit.Event) {
	if ev.Kind != audit.KindRequest {
		return
	}
	n := ev.Attempts()
	s.events += n
	if why, _ := classify(ev); why != "" {
		s.notUsed[why] += n
		return
	}
	if ev.OnBehalfOf != nil {
		// A grant suggested from it would drop its on_behalf_of and give
		// the agent, for everyone, what one person let it do.
		s.notUsed["made with a delegation (suggest writes no on_behalf_of)"] += n
		return
	}
	b := ev.Basis
	k := shapeKey{
		src: ev.Src, dst: ev.Dst, method: ev.Method, tool: ev.Tool, resource: ev.Resource, prompt: ev.Prompt, model: ev.Model,
		decision: string(ev.Decision), reason: string(ev.Reason), rule: ev.Rule, version: ev.PolicyVersion,
		srcTags: strings.Join(b.SrcTags, ","), dstTags: strings.Join(b.DstTags, ","), user: b.SrcUser, bmethod: b.Method,
		httpMethod: b.HTTPMethod, path: b.Path, argPaths: strings.Join(b.ArgPaths, ","), args: b.Args, template: b.Template,
	}
	sh := s.shapes[k]
	if sh == nil {
		if len(s.shapes) >= s.opts.MaxShapes {
			s.over = true
			s.notUsed["beyond the distinct requests kept"] += n
			return
		}
		sh = &shape{ev: *ev, first: ev.Time, last: ev.Time}
		sh.ev.Count = 0
		s.shapes[k] = sh
		s.order = append(s.order, sh)
	}
	sh.ev.Count += n
	if ev.Time.Before(sh.first) {
		sh.first = ev.Time
	}
	if ev.Time.After(sh.last) {
		sh.last = ev.Time
	}
	if len(sh.examples) < s.opts.Examples {
		sh.examples = append(sh.examples, ev.ID)
	}
}

// Suggestion is a suggested policy and what it rests on.
type Suggestion struct {
	// Document is the policy, HuJSON with the evidence in comments.
	Document string    `json:"policy"`
	Since    time.Time `json:"since"`
	// Events are the request events read; Allowed and Denied, the policy
	// decisions used as evidence; NotUsed, the others, by why.
	Events  int64   `json:"events"`
	Allowed int64   `json:"allowed"`
	Denied  int64   `json:"denied"`
	NotUsed []Count `json:"not_used"`
	// Grants are the suggested grants, as in Document.
	Grants []SuggestedGrant `json:"grants"`
	// Tests is the number of generated tests, TestsLeftOut those beyond
	// the bound, KnownDenialsAllowed the observed denials the suggestion
	// would allow (a member of a group gets what another used, or a glob
	// covers the name), which get no deny test.
	Tests               int   `json:"tests"`
	TestsLeftOut        int   `json:"tests_left_out,omitempty"`
	KnownDenialsAllowed int64 `json:"known_denials_allowed"`
	// Carried are the sections kept from the active policy.
	Carried []string `json:"carried,omitempty"`
	// UnusedGrants are the active policy's grants that decided none of
	// the observed allowed calls; UnusedEntries the list entries of the
	// others that matched none of them.
	UnusedGrants  []policy.GrantInfo `json:"unused_grants"`
	UnusedEntries []UnusedEntry      `json:"unused_entries"`
	// Check is the replay of the suggestion over the evidence.
	Check SuggestCheck `json:"check"`
}

// SuggestedGrant is one grant of a suggestion.
type SuggestedGrant struct {
	Src     []string        `json:"src"`
	SrcTags []string        `json:"src_tags"`
	Dst     string          `json:"dst"`
	Items   []SuggestedItem `json:"items"`
	When    string          `json:"when,omitempty"`
	// Approval and ApprovalTimeout are carried from the active grant that
	// allowed these calls.
	Approval        string `json:"approval,omitempty"`
	ApprovalTimeout string `json:"approval_timeout,omitempty"`
}

// SuggestedItem is one entry of a suggested grant's list, with its
// evidence.
type SuggestedItem struct {
	Field   string    `json:"field"` // tools, resources, prompts, models, paths
	Entry   string    `json:"entry"`
	Covers  []string  `json:"covers,omitempty"` // for a glob, the names it stands for
	Count   int64     `json:"count"`
	Sources int       `json:"sources"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	// Examples are example event ids.
	Examples []string `json:"examples"`
}

// UnusedEntry is a list entry of an active grant that no observed allowed
// call decided by that grant matched.
type UnusedEntry struct {
	Grant int    `json:"grant"`
	Line  int    `json:"line"`
	Field string `json:"field"`
	Entry string `json:"entry"`
}

// SuggestCheck is what replay of the suggestion over the window found.
type SuggestCheck struct {
	// AllowedChecked of the observed allowed calls were decided again
	// under the suggestion; NewlyDenied of them it would deny (always 0
	// in a suggestion returned without error).
	AllowedChecked int64 `json:"allowed_checked"`
	NewlyDenied    int64 `json:"newly_denied"`
	// DeniedChecked of the observed denials were decided again;
	// NewlyAllowed of them the suggestion would allow, in Changes.
	DeniedChecked int64     `json:"denied_checked"`
	NewlyAllowed  int64     `json:"newly_allowed"`
	Changes       []*Change `json:"changes"`
}

// cellKey is one source group at one destination.
type cellKey struct{ group, dst string }

type cell struct {
	key     cellKey
	tags    []string
	members map[string][]string // source selector -> its tags
	dstNode policy.Node
	items   map[itemKey]*evidence
}

// itemKey is one used item with the approval the active grant that
// allowed it carried.
type itemKey struct {
	field, name, approval string
	timeout               time.Duration
}

type evidence struct {
	count       int64
	first, last time.Time
	examples    []string
	sources     map[string]bool
	args        map[string]*argStat // nil: no bound possible
	argsInit    bool
}

type argStat struct {
	dead           bool
	kind           byte // 'i' integer, 's' string, 'b' bool
	min, max       int64
	strs           map[string]bool
	bools          map[bool]bool
	exampleArgs    string
	exampleArgPath []string
}

// memberKey is one source at one destination, for tests.
type memberKey struct{ src, dst string }

type memberTests struct {
	src, dst       policy.Node
	srcSel, dstSel string
	allow          []shapeReq
	deny           []shapeReq
}

type shapeReq struct {
	req  policy.Request
	args string // the kept arguments, JSON
	n    int64
}

// Suggest builds the suggestion, checks it (it compiles, its tests pass,
// replay allows every observed allowed call) and returns it.
func (s *Suggester) Suggest() (*Suggestion, error) {
	if s.over {
		return nil, fmt.Errorf("%w (more than %d): narrow with --dst or --since", ErrTooManyShapes, s.opts.MaxShapes)
	}
	sg := &Suggestion{Since: s.opts.Since, Events: s.events}
	var infos []policy.GrantInfo
	if s.opts.Active != nil {
		infos = s.opts.Active.Grants()
	}
	usedGrant := make(map[int]int64)
	usedItems := make(map[int]map[string]map[string]bool) // grant -> field -> names
	cells := make(map[cellKey]*cell)
	seen := make(map[string]map[string]map[string]bool) // dst -> field -> names seen
	members := make(map[memberKey]*memberTests)
	dsts := make(map[string]policy.Node)
	var allowed, denied []*shape
	for _, sh := range s.order {
		ev := &sh.ev
		req, why := s.parse.request(ev)
		if why != "" {
			s.notUsed[why] += ev.Count
			continue
		}
		if req.Src.Kind == identity.KindAdmin {
			s.notUsed["the source is an admin node (grants name admins only through *)"] += ev.Count
			continue
		}
		field, name := itemOf(&req)
		dst := identity.Short(ev.Dst)
		if seen[dst] == nil {
			seen[dst] = make(map[string]map[string]bool)
		}
		if seen[dst][field] == nil {
			seen[dst][field] = make(map[string]bool)
		}
		seen[dst][field][name] = true
		if _, ok := dsts[dst]; !ok {
			dsts[dst] = req.Dst
		}
		src := identity.Short(ev.Src)
		mk := memberKey{src, dst}
		mt := members[mk]
		if mt == nil {
			mt = &memberTests{src: req.Src, dst: req.Dst, srcSel: src, dstSel: dst}
			members[mk] = mt
		}
		sr := shapeReq{req: req, args: ev.Basis.Args, n: ev.Count}
		if ev.Decision != audit.Allow {
			sg.Denied += ev.Count
			denied = append(denied, sh)
			mt.deny = append(mt.deny, sr)
			continue
		}
		sg.Allowed += ev.Count
		allowed = append(allowed, sh)
		mt.allow = append(mt.allow, sr)
		ik := itemKey{field: field, name: name}
		if s.opts.Active != nil {
			d, judged := s.opts.Active.DecideRecorded(req, s.parse.keptArgs(ev.Basis.ArgPaths))
			if !judged && ev.PolicyVersion == s.opts.ActiveVersion && s.opts.ActiveVersion != "" {
				// A when reading what the trail does not keep: the
				// gateway recorded the grant that allowed it.
				if g, err := strconv.Atoi(ev.Rule); err == nil && g >= 0 && g < len(infos) {
					d, judged = policy.Decision{Allow: true, Grant: g}, true
				}
			}
			if judged && d.Allow && d.Grant >= 0 {
				usedGrant[d.Grant] += ev.Count
				if usedItems[d.Grant] == nil {
					usedItems[d.Grant] = make(map[string]map[string]bool)
				}
				if usedItems[d.Grant][field] == nil {
					usedItems[d.Grant][field] = make(map[string]bool)
				}
				usedItems[d.Grant][field][name] = true
				if d.Grant < len(infos) && infos[d.Grant].Approval != "" {
					ik.approval, ik.timeout = infos[d.Grant].Approval, infos[d.Grant].ApprovalTimeout
				}
			}
		}
		group := "name:" + src
		if len(ev.Basis.SrcTags) > 0 {
			group = "tags:" + strings.Join(ev.Basis.SrcTags, ",")
		}
		ck := cellKey{group, dst}
		c := cells[ck]
		if c == nil {
			c = &cell{key: ck, tags: ev.Basis.SrcTags, members: make(map[string][]string), dstNode: req.Dst, items: make(map[itemKey]*evidence)}
			cells[ck] = c
		}
		c.members[src] = ev.Basis.SrcTags
		e := c.items[ik]
		if e == nil {
			e = &evidence{first: sh.first, last: sh.last, sources: make(map[string]bool)}
			c.items[ik] = e
		}
		e.count += ev.Count
		e.first, e.last = minTime(e.first, sh.first), maxTime(e.last, sh.last)
		e.sources[src] = true
		for _, id := range sh.examples {
			if len(e.examples) < s.opts.Examples {
				e.examples = append(e.examples, id)
			}
		}
		if s.opts.Args {
			e.addArgs(ev.Basis)
		}
	}
	sg.NotUsed = counts(s.notUsed)

	// The grants, cell by cell in a stable order.
	keys := slices.Collect(maps.Keys(cells))
	slices.SortFunc(keys, func(a, b cellKey) int {
		return strings.Compare(a.dst+"\x00"+a.group, b.dst+"\x00"+b.group)
	})
	for _, k := range keys {
		sg.Grants = append(sg.Grants, s.cellGrants(cells[k], seen[k.dst])...)
	}

	// Carried sections, then the grants alone to generate tests against.
	carried := carrySections(s.opts.Active)
	grantsDoc := s.render(sg, carried, nil, false)
	cand, err := policy.Compile([]byte(grantsDoc), "suggestion")
	if err != nil && len(carried) > 0 {
		carried = nil // what the active policy had does not fit the suggestion
		grantsDoc = s.render(sg, nil, nil, false)
		cand, err = policy.Compile([]byte(grantsDoc), "suggestion")
	}
	if err != nil {
		return nil, fmt.Errorf("the suggested policy does not compile (a bug): %w\n%s", err, grantsDoc)
	}
	for _, c := range carried {
		sg.Carried = append(sg.Carried, c.name)
	}
	tests := s.tests(cand, members, sg)
	final, err := policy.Compile([]byte(s.render(sg, carried, tests, false)), "suggestion")
	if err != nil {
		return nil, fmt.Errorf("the suggested policy does not pass its own tests (a bug): %w", err)
	}

	// The check: replay of the suggestion over the evidence.
	ea := New(Options{Candidate: final})
	for _, sh := range allowed {
		ea.Add(&sh.ev)
	}
	ra := ea.Report()
	sg.Check.AllowedChecked, sg.Check.NewlyDenied = ra.Judged, ra.Changed
	if ra.Changed != 0 || ra.Judged != sg.Allowed {
		return sg, fmt.Errorf("replay of the suggestion denies %d of the %d observed allowed calls and could not judge %d (a bug): %+v",
			ra.Changed, sg.Allowed, sg.Allowed-ra.Judged, ra.Changes)
	}
	ed := New(Options{Candidate: final})
	for _, sh := range denied {
		ed.Add(&sh.ev)
	}
	rd := ed.Report()
	sg.Check.DeniedChecked, sg.Check.NewlyAllowed, sg.Check.Changes = rd.Judged, rd.Changed, rd.Changes
	// The same document, its header now saying what the check found.
	sg.Document = s.render(sg, carried, tests, true)
	if _, err := policy.Compile([]byte(sg.Document), "suggestion"); err != nil {
		return nil, fmt.Errorf("the suggested policy does not compile (a bug): %w", err)
	}

	// What the active policy grants that nothing used.
	sg.UnusedGrants, sg.UnusedEntries = []policy.GrantInfo{}, []UnusedEntry{}
	for _, g := range infos {
		if s.opts.SeenDestinationsOnly && !slices.ContainsFunc(slices.Collect(maps.Values(dsts)), func(n policy.Node) bool {
			return s.opts.Active.GrantReaches(g.Index, n)
		}) {
			continue
		}
		if usedGrant[g.Index] == 0 {
			sg.UnusedGrants = append(sg.UnusedGrants, g)
			continue
		}
		for _, field := range []string{"tools", "resources", "prompts", "models", "paths"} {
			for _, entry := range g.Lists[field] {
				if strings.HasPrefix(entry, "!") || (field == "tools" && strings.Contains(entry, ":")) {
					continue // exclusions, and tool classes, are not about one name
				}
				used := false
				for name := range usedItems[g.Index][field] {
					if policy.GlobMatch(entry, name) {
						used = true
						break
					}
				}
				if !used {
					sg.UnusedEntries = append(sg.UnusedEntries, UnusedEntry{Grant: g.Index, Line: g.Line, Field: field, Entry: entry})
				}
			}
		}
	}
	return sg, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// itemOf names a request's item by the grant field that lists it.
func itemOf(r *policy.Request) (field, name string) {
	switch r.Action {
	case policy.ActionTool:
		return "tools", r.Tool
	case policy.ActionResource:
		return "resources", r.Resource
	case policy.ActionPrompt:
		return "prompts", r.Prompt
	case policy.ActionModel:
		return "models", r.Model
	}
	return "paths", r.HTTPMethod + " " + r.Path
}

// addArgs folds one allowed call's kept arguments into the item's bounds.
func (e *evidence) addArgs(b *audit.Basis) {
	if !e.argsInit {
		e.argsInit = true
		e.args = make(map[string]*argStat)
		for _, p := range b.ArgPaths {
			e.args[p] = &argStat{}
		}
	}
	if len(e.args) == 0 {
		return
	}
	var args map[string]any
	if b.Args != "" {
		dec := json.NewDecoder(strings.NewReader(b.Args))
		dec.UseNumber()
		if dec.Decode(&args) != nil {
			args = nil
		}
	}
	for p, st := range e.args {
		if st.dead {
			continue
		}
		if !slices.Contains(b.ArgPaths, p) {
			st.dead = true
			continue
		}
		v, ok := lookup(args, strings.Split(p, "."))
		if !ok {
			st.dead = true
			continue
		}
		if st.exampleArgs == "" {
			st.exampleArgs = b.Args
		}
		switch x := v.(type) {
		case json.Number:
			i, err := strconv.ParseInt(string(x), 10, 64)
			switch {
			case err != nil || (st.kind != 0 && st.kind != 'i'):
				st.dead = true
			case st.kind == 0:
				st.kind, st.min, st.max = 'i', i, i
			default:
				st.min, st.max = min(st.min, i), max(st.max, i)
			}
		case string:
			if st.kind != 0 && st.kind != 's' {
				st.dead = true
				break
			}
			st.kind = 's'
			if st.strs == nil {
				st.strs = make(map[string]bool)
			}
			st.strs[x] = true
			if len(st.strs) > maxStringValues {
				st.dead = true
			}
		case bool:
			if st.kind != 0 && st.kind != 'b' {
				st.dead = true
				break
			}
			st.kind = 'b'
			if st.bools == nil {
				st.bools = make(map[bool]bool)
			}
			st.bools[x] = true
			if len(st.bools) > 1 {
				st.dead = true
			}
		default:
			st.dead = true
		}
	}
}

func lookup(v map[string]any, path []string) (any, bool) {
	var cur any = v
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// when writes the bounds of an item's arguments as a when, or "".
func (e *evidence) when() string {
	var parts []string
	for _, p := range slices.Sorted(maps.Keys(e.args)) {
		st := e.args[p]
		if st.dead || st.kind == 0 {
			continue
		}
		ref := celPath(p)
		switch st.kind {
		case 'i':
			if st.min == st.max {
				parts = append(parts, fmt.Sprintf("%s == %d", ref, st.min))
			} else {
				parts = append(parts, fmt.Sprintf("%s >= %d && %s <= %d", ref, st.min, ref, st.max))
			}
		case 's':
			vals := slices.Sorted(maps.Keys(st.strs))
			q := make([]string, len(vals))
			for i, v := range vals {
				q[i] = jsonQuote(v)
			}
			if len(q) == 1 {
				parts = append(parts, ref+" == "+q[0])
			} else {
				parts = append(parts, ref+" in ["+strings.Join(q, ", ")+"]")
			}
		case 'b':
			for v := range st.bools {
				parts = append(parts, ref+" == "+strconv.FormatBool(v))
			}
		}
	}
	return strings.Join(parts, " && ")
}

// celPath writes args at a dotted path: args.a.b, or args['x-y'] for a
// key that is not an identifier.
func celPath(p string) string {
	var b strings.Builder
	b.WriteString("args")
	for _, k := range strings.Split(p, ".") {
		if ident(k) {
			b.WriteString("." + k)
		} else {
			b.WriteString("[" + jsonQuote(k) + "]")
		}
	}
	return b.String()
}

var celReserved = map[string]bool{
	"true": true, "false": true, "null": true, "in": true, "as": true, "break": true, "const": true, "continue": true, "else": true,
	"for": true, "function": true, "if": true, "import": true, "let": true, "loop": true, "package": true, "namespace": true,
	"return": true, "var": true, "void": true, "while": true,
}

func ident(k string) bool {
	if k == "" || celReserved[k] {
		return false
	}
	for i, r := range k {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

// cellGrants turns one group's use of one destination into grants: one
// for the items that need no when and no approval, one per approval, one
// per item with a when.
func (s *Suggester) cellGrants(c *cell, seen map[string]map[string]bool) []SuggestedGrant {
	srcs := slices.Sorted(maps.Keys(c.members))
	tags := c.tags
	if tags == nil {
		tags = []string{}
	}
	type gk struct {
		approval string
		timeout  time.Duration
		when     string
	}
	byGrant := make(map[gk]map[string][]itemEv) // -> field -> items
	for ik, e := range c.items {
		k := gk{approval: ik.approval, timeout: ik.timeout}
		if s.opts.Args && e.args != nil {
			k.when = e.when()
		}
		if byGrant[k] == nil {
			byGrant[k] = make(map[string][]itemEv)
		}
		byGrant[k][ik.field] = append(byGrant[k][ik.field], itemEv{ik.name, e})
	}
	gks := slices.Collect(maps.Keys(byGrant))
	// Held grants first, so that they decide what they hold; then by
	// when, plain grant last.
	slices.SortFunc(gks, func(a, b gk) int {
		if (a.approval == "") != (b.approval == "") {
			if a.approval != "" {
				return -1
			}
			return 1
		}
		if (a.when == "") != (b.when == "") {
			if a.when != "" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.approval+"\x00"+a.when+"\x00"+a.timeout.String(), b.approval+"\x00"+b.when+"\x00"+b.timeout.String())
	})
	var out []SuggestedGrant
	for _, k := range gks {
		g := SuggestedGrant{Src: srcs, SrcTags: tags, Dst: c.key.dst, When: k.when, Approval: k.approval}
		if k.approval != "" {
			g.ApprovalTimeout = k.timeout.String()
		}
		for _, field := range []string{"tools", "resources", "prompts", "models", "paths"} {
			items := byGrant[k][field]
			slices.SortFunc(items, func(a, b itemEv) int { return strings.Compare(a.name, b.name) })
			minGlob := s.opts.MinGlob
			if k.when != "" || k.approval != "" {
				minGlob = -1 // a when or a hold is about the names seen, exactly
			}
			g.Items = append(g.Items, collapse(field, items, seen[field], minGlob)...)
		}
		out = append(out, g)
	}
	return out
}

type itemEv struct {
	name string
	e    *evidence
}

// collapse writes a list's entries: globs where the evidence supports
// them (see the package comment), exact names otherwise.
func collapse(field string, items []itemEv, seen map[string]bool, minGlob int) []SuggestedItem {
	seps := "_-.:/"
	if field == "resources" || field == "paths" {
		seps = "/"
	}
	done := make(map[string]bool)
	var out []SuggestedItem
	if minGlob > 0 && len(items) >= minGlob {
		// Candidate prefixes, longest first.
		cands := make(map[string]bool)
		for _, it := range items {
			for i := 2; i < len(it.name)-1; i++ {
				if strings.IndexByte(seps, it.name[i]) >= 0 && !strings.ContainsAny(it.name[:i+1], "*?") {
					cands[it.name[:i+1]] = true
				}
			}
		}
		prefixes := slices.Collect(maps.Keys(cands))
		slices.SortFunc(prefixes, func(a, b string) int {
			if len(a) != len(b) {
				return len(b) - len(a)
			}
			return strings.Compare(a, b)
		})
		mine := make(map[string]bool, len(items))
		for _, it := range items {
			mine[it.name] = true
		}
		for _, p := range prefixes {
			var covered []itemEv
			for _, it := range items {
				if !done[it.name] && strings.HasPrefix(it.name, p) {
					covered = append(covered, it)
				}
			}
			if len(covered) < minGlob {
				continue
			}
			clean := true
			for name := range seen {
				if strings.HasPrefix(name, p) && !mine[name] {
					clean = false
					break
				}
			}
			if !clean {
				continue
			}
			item := SuggestedItem{Field: field, Entry: p + "*"}
			srcs := make(map[string]bool)
			for _, it := range covered {
				done[it.name] = true
				item.Covers = append(item.Covers, it.name)
				fold(&item, it.e, srcs)
			}
			item.Sources = len(srcs)
			out = append(out, item)
		}
	}
	for _, it := range items {
		if done[it.name] {
			continue
		}
		item := SuggestedItem{Field: field, Entry: it.name}
		srcs := make(map[string]bool)
		fold(&item, it.e, srcs)
		item.Sources = len(srcs)
		out = append(out, item)
	}
	slices.SortFunc(out, func(a, b SuggestedItem) int { return strings.Compare(a.Entry, b.Entry) })
	return out
}

func fold(item *SuggestedItem, e *evidence, srcs map[string]bool) {
	if item.Count == 0 {
		item.First, item.Last = e.first, e.last
	}
	item.Count += e.count
	item.First, item.Last = minTime(item.First, e.first), maxTime(item.Last, e.last)
	for _, id := range e.examples {
		if len(item.Examples) < DefaultExamples {
			item.Examples = append(item.Examples, id)
		}
	}
	for s := range e.sources {
		srcs[s] = true
	}
}

// carried is a top-level section kept from the active policy, as written.
type carried struct{ name, text string }

// carrySections returns the sections of the active policy that restrict
// or describe rather than grant, and that the suggestion keeps: groups
// (approval groups, limits' selectors), limits, tool_pins, audit_args,
// and node_owners (who may join with --sso is not what the trail of calls
// can judge). Annotations are left out (the suggestion names no tool class) and so
// are the tests (they pin the old grants).
func carrySections(active *policy.Policy) []carried {
	if active == nil {
		return nil
	}
	v, err := hujson.Parse(active.Document())
	if err != nil {
		return nil
	}
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		return nil
	}
	var out []carried
	for _, m := range obj.Members {
		name, _ := m.Name.Value.(hujson.Literal)
		switch n := name.String(); n {
		case "groups", "limits", "tool_pins", "audit_args", "node_owners":
			val := m.Value.Clone()
			val.BeforeExtra, val.AfterExtra = nil, nil
			out = append(out, carried{n, string(val.Pack())})
		}
	}
	return out
}

// render writes the document.
func (s *Suggester) render(sg *Suggestion, carry []carried, tests []string, checked bool) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Suggested by `agentmesh policy suggest` from the audit trail since %s:\n", sg.Since.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "// %d request events; %d allowed calls and %d denials were policy decisions with a recorded basis (the evidence).\n", sg.Events, sg.Allowed, sg.Denied)
	b.WriteString("// Sources are grouped by their tag set at the time (by name when untagged); grants name them by name.\n")
	if checked {
		fmt.Fprintf(&b, "// Checked before printing: replay of this policy over the same window (the replay engine, in process)\n")
		fmt.Fprintf(&b, "// allows all %d observed allowed calls; it would newly allow %d of the %d observed denials.\n", sg.Allowed, sg.Check.NewlyAllowed, sg.Denied)
	}
	b.WriteString("{\n  \"grants\": [\n")
	for _, g := range sg.Grants {
		var count int64
		var first, last time.Time
		for i, it := range g.Items {
			count += it.Count
			if i == 0 {
				first, last = it.First, it.Last
			}
			first, last = minTime(first, it.First), maxTime(last, it.Last)
		}
		tags := "no tags"
		if len(g.SrcTags) > 0 {
			tags = "tags " + strings.Join(g.SrcTags, ",")
		}
		fmt.Fprintf(&b, "    // %s (%s) -> %s: %d allowed calls, %s to %s\n", commentSafe(strings.Join(g.Src, ", ")), commentSafe(tags), commentSafe(g.Dst), count,
			first.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339))
		b.WriteString("    {\n")
		fmt.Fprintf(&b, "      \"src\": %s,\n      \"dst\": [%s],\n", quoteList(g.Src), jsonQuote(g.Dst))
		if g.When != "" {
			fmt.Fprintf(&b, "      \"when\": %s, // from the kept argument values of those calls\n", jsonQuote(g.When))
		}
		if g.Approval != "" {
			fmt.Fprintf(&b, "      \"approval\": %s, \"approval_timeout\": %s, // as the active grant that allowed them\n", jsonQuote(g.Approval), jsonQuote(g.ApprovalTimeout))
		}
		field := ""
		for _, it := range g.Items {
			if it.Field != field {
				if field != "" {
					b.WriteString("      ],\n")
				}
				field = it.Field
				fmt.Fprintf(&b, "      %s: [\n", jsonQuote(field))
			}
			fmt.Fprintf(&b, "        %s, // %d calls by %d sources, %s to %s, e.g. %s", jsonQuote(it.Entry), it.Count, it.Sources,
				it.First.UTC().Format(time.RFC3339), it.Last.UTC().Format(time.RFC3339), strings.Join(it.Examples, " "))
			if len(it.Covers) > 0 {
				fmt.Fprintf(&b, "; covers %s, every name seen there with this prefix", commentSafe(strings.Join(it.Covers, " ")))
			}
			if strings.ContainsAny(it.Entry[:len(it.Entry)-min(1, len(it.Covers))], "*?") {
				b.WriteString("; note: * and ? in the name are wildcards, so this matches more than the name")
			}
			b.WriteString("\n")
		}
		if field != "" {
			b.WriteString("      ],\n")
		}
		b.WriteString("    },\n")
	}
	b.WriteString("  ],\n")
	for _, c := range carry {
		fmt.Fprintf(&b, "  // kept from the active policy\n  %s: %s,\n", jsonQuote(c.name), c.text)
	}
	if tests != nil {
		b.WriteString("  // The observed allowed calls and known denials, pinned.\n  \"tests\": [\n")
		for _, t := range tests {
			b.WriteString("    " + t + ",\n")
		}
		b.WriteString("  ],\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = jsonQuote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// expectation writes a request as a test entry, or "" when tests cannot
// say it (a URI template).
func expectation(r *policy.Request) string {
	switch r.Action {
	case policy.ActionTool:
		return "tools/call " + r.Tool
	case policy.ActionResource:
		if r.Template {
			return ""
		}
		if r.Method == "resources/subscribe" {
			return "resources/subscribe " + r.Resource
		}
		return "resources/read " + r.Resource
	case policy.ActionPrompt:
		return "prompts/get " + r.Prompt
	case policy.ActionModel:
		return "model " + r.Model
	case policy.ActionPath:
		return "path " + r.HTTPMethod + " " + r.Path
	}
	return ""
}

// tests generates the tests: per source and destination, one test of the
// calls that need no arguments, and one per distinct kept arguments a
// decision needed. Each entry is first decided by cand as a test would
// be, and left out unless it comes out as observed.
func (s *Suggester) tests(cand *policy.Policy, members map[memberKey]*memberTests, sg *Suggestion) []string {
	keys := slices.Collect(maps.Keys(members))
	slices.SortFunc(keys, func(a, b memberKey) int { return strings.Compare(a.dst+"\x00"+a.src, b.dst+"\x00"+b.src) })
	var out []string
	for _, k := range keys {
		mt := members[k]
		type tk struct{ args string }
		allow, deny := make(map[tk][]string), make(map[tk][]string)
		var order []tk
		withArgs := make(map[string]bool)
		add := func(m map[tk][]string, list []shapeReq, want bool) {
			for _, sr := range list {
				e := expectation(&sr.req)
				if e == "" {
					continue
				}
				test, _ := testRequestOf(&sr.req)
				test.Src, test.Dst = mt.src, mt.dst
				// Allowed calls without arguments first (most need none),
				// denials with their kept arguments first (a when_false
				// is pinned with the values it was false for).
				keyArgs := tk{}
				if !want {
					keyArgs = tk{sr.args}
				}
				test.Args = decodeArgs(keyArgs.args)
				if cand.Decide(test).Allow != want {
					other := tk{sr.args}
					if !want {
						other = tk{}
					}
					keyArgs = other
					test.Args = decodeArgs(other.args)
					if cand.Decide(test).Allow != want {
						if !want {
							sg.KnownDenialsAllowed += sr.n
						}
						continue
					}
				}
				if slices.Contains(m[keyArgs], e) || len(m[keyArgs]) >= maxTestEntries {
					continue
				}
				// One example with arguments per item and verdict is
				// enough to pin a when: not a test per value.
				if keyArgs.args != "" {
					if withArgs[e+"\x00"+strconv.FormatBool(want)] {
						continue
					}
					withArgs[e+"\x00"+strconv.FormatBool(want)] = true
				}
				if _, ok := allow[keyArgs]; !ok {
					if _, ok := deny[keyArgs]; !ok {
						order = append(order, keyArgs)
					}
				}
				m[keyArgs] = append(m[keyArgs], e)
			}
		}
		add(allow, mt.allow, true)
		add(deny, mt.deny, false)
		for _, a := range order {
			if len(out) >= maxTests {
				sg.TestsLeftOut++
				continue
			}
			var b strings.Builder
			fmt.Fprintf(&b, `{"src": %s, "src_tags": %s, "dst": %s, "dst_tags": %s`, jsonQuote(mt.srcSel), quoteList(identity.TagStrings(mt.src.Tags)),
				jsonQuote(mt.dstSel), quoteList(identity.TagStrings(mt.dst.Tags)))
			if a.args != "" {
				fmt.Fprintf(&b, `, "args": %s`, a.args)
			}
			if l := allow[a]; len(l) > 0 {
				fmt.Fprintf(&b, `, "allow": %s`, quoteList(l))
			}
			if l := deny[a]; len(l) > 0 {
				fmt.Fprintf(&b, `, "deny": %s`, quoteList(l))
			}
			b.WriteString("}")
			out = append(out, b.String())
		}
	}
	sg.Tests = len(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// testRequestOf is the request a test entry for r asks.
func testRequestOf(r *policy.Request) (policy.Request, bool) {
	t := policy.Request{Action: r.Action, Method: r.Method, Tool: r.Tool, Resource: r.Resource, Prompt: r.Prompt, Model: r.Model,
		HTTPMethod: r.HTTPMethod, Path: r.Path}
	switch r.Action {
	case policy.ActionTool:
		t.Method = "tools/call"
	case policy.ActionResource:
		if t.Method != "resources/subscribe" {
			t.Method = "resources/read"
		}
	case policy.ActionPrompt:
		t.Method = "prompts/get"
	case policy.ActionModel:
		t.Method = "model"
	case policy.ActionPath:
		t.Method = r.Path
	}
	return t, true
}

func decodeArgs(s string) map[string]any {
	if s == "" {
		return nil
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if dec.Decode(&m) != nil {
		return nil
	}
	return m
}

// jsonQuote writes s as a JSON string, which is also a CEL string
// literal (strconv.Quote's \x escapes are neither).
func jsonQuote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(s) != nil {
		return `""`
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// commentSafe keeps a name from ending a line comment early: control
// characters become '?'.
func commentSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 {
			return '?'
		}
		return r
	}, s)
}
