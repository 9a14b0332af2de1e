package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Lint: what 'policy validate' warns about. None of it is an error: a
// policy that lints badly still decides exactly as written. Each warning
// is sound (a warned grant or entry really is dead); Lint misses some
// that a full analysis would find, never the other way round.
//
// How grants combine decides what "shadowed" means. Grants only add
// access: a request is checked against the grants that link its source
// to its destination, lowest index first, and the lowest grant that
// allows it decides (its when held, or it has none); there is no deny
// grant and no "first match stops" for a grant that does not allow. So
// grant j is shadowed when every request it could allow is already
// allowed by an earlier grant without a when: it never decides, and
// removing it changes no decision (its approval and when never apply).
// Lint proves that pair by pair: for each (dst, src) selector pair of j
// (groups expanded), some earlier grant linking the same pair or "*"
// has no when and covers each of j's lists (its includes cover j's
// includes as globs, and each of its exclusions is one of j's). A
// grant that gives only a connection is shadowed by any earlier grant
// linking the pair, since a connect is decided without when. Coverage
// through tags is not used: which nodes carry a tag changes.

// Warning is one lint finding.
type Warning struct {
	// Line and Column are 1-based, Path names the value ("grants[3]",
	// "grants[3].tools[1]").
	Line   int    `json:"line"`
	Column int    `json:"column"`
	Path   string `json:"path"`
	// Code is one of the Lint codes below.
	Code string `json:"code"`
	Msg  string `json:"message"`
}

// Lint codes.
const (
	// LintNeverMatches: no registered node matches the grant's src, or
	// none its dst (only with a registry).
	LintNeverMatches = "never_matches"
	// LintUnpinnedTool: a tools entry of a grant whose every destination
	// is a tool server with pins names no pinned tool.
	LintUnpinnedTool = "no_pinned_tool"
	// LintShadowed: the grant never decides (see above).
	LintShadowed = "shadowed"
	// LintEmptyExclusion: a "!" entry excludes nothing the list's
	// includes could match.
	LintEmptyExclusion = "empty_exclusion"
	// LintNoGrantorRights: an on_behalf_of entry names a person whom no
	// grant gives anything, so every request made for them exceeds
	// their rights at the gateway (delegation.go).
	LintNoGrantorRights = "no_grantor_rights"
)

func (w Warning) String() string {
	return fmt.Sprintf("%d:%d: %s: %s (%s)", w.Line, w.Column, w.Path, w.Msg, w.Code)
}

// Lint returns the warnings about p, in document order. nodes are the
// registered nodes; with nil, grants are not checked against a registry.
// A projection is not linted.
func (p *Policy) Lint(nodes []Node) []Warning {
	if p == nil || p.grantNumbers != nil {
		return nil
	}
	raw, errs := p.decoded()
	if len(errs) > 0 || raw == nil || len(raw.grants) != len(p.grants) {
		return nil
	}
	srcs, dsts := p.grantSides()
	budget := maxCoverChecks
	var out []Warning
	warn := func(off int, path, code, format string, args ...any) {
		line, col := lineColumn(p.doc, off)
		out = append(out, Warning{Line: line, Column: col, Path: path, Code: code, Msg: fmt.Sprintf(format, args...)})
	}
	for i := range p.grants {
		path := fmt.Sprintf("grants[%d]", i)
		rg := &raw.grants[i]
		if nodes != nil {
			for _, side := range []struct {
				name string
				keys []nodeKey
				off  int
			}{{"src", srcs[i], rg.src.off}, {"dst", dsts[i], rg.dst.off}} {
				if !slices.ContainsFunc(side.keys, func(k nodeKey) bool { return keyMatchesAny(k, nodes) }) {
					warn(side.off, path+"."+side.name, LintNeverMatches, "can never match: no registered node matches any of its %s selectors", side.name)
				}
			}
		}
		p.lintPins(i, rg, dsts[i], path, warn)
		if by, ok := p.shadowedBy(i, srcs[i], dsts[i], &budget); ok {
			msg := "shadowed: earlier grants (" + joinInts(by) + ") allow everything it allows, so it never decides"
			if p.grants[i].approval != "" || p.grants[i].when != nil {
				msg += "; its when and approval never apply"
			}
			warn(rg.off, path, LintShadowed, "%s", msg)
		}
		for k, l := range rg.lists {
			if l != nil {
				p.lintExclusions(i, itemKind(k), l, path+"."+itemFields[k], warn)
			}
		}
	}
	p.lintGrantors(raw, srcs, warn)
	slices.SortStableFunc(out, func(a, b Warning) int { return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column)) })
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}

// keyMatchesAny reports whether some node is known by k; "*" and user:
// selectors (a tailnet's nodes are not registered) always match.
func keyMatchesAny(k nodeKey, nodes []Node) bool {
	switch k.kind {
	case keyAll, keyUser:
		return true
	}
	for i := range nodes {
		if slices.Contains(nodeKeys(&nodes[i]), k) {
			return true
		}
	}
	return false
}

type warnFunc func(off int, path, code, format string, args ...any)

// lintPins warns about the tools entries of grant i that no pinned tool
// matches, when every destination of the grant is a tool server whose
// tool_pins entry pins some tool: a call the grant gives could then
// only reach a tool that its gateway treats as unpinned.
func (p *Policy) lintPins(i int, rg *rawGrant, dsts []nodeKey, path string, warn warnFunc) {
	l := rg.lists[itemTool]
	if l == nil || len(dsts) == 0 {
		return
	}
	var pinned []string
	for _, k := range dsts {
		sp, ok := p.pins[k.name]
		if k.kind != keyTool || !ok || len(sp.Tools) == 0 {
			return
		}
		for t := range sp.Tools {
			pinned = append(pinned, t)
		}
	}
	for j, s := range l.items {
		if strings.HasPrefix(s.s, "!") {
			continue
		}
		_, pat, _ := splitClass(s.s)
		g := compileGlob(pat)
		if !slices.ContainsFunc(pinned, g.match) {
			warn(s.off, fmt.Sprintf("%s.tools[%d]", path, j), LintUnpinnedTool, "%q matches no tool pinned in tool_pins for this grant's dst", s.s)
		}
	}
}

// maxCoverChecks bounds the grant comparisons of one Lint: a document of
// many grants that all link the same pair would otherwise cost the square
// of their number. Once it is spent, no more grants are found shadowed
// (fewer warnings, never a wrong one).
const maxCoverChecks = 20_000_000

// shadowedBy reports whether grant j never decides, and the earlier
// grants that decide instead; each earlier grant looked at spends one of
// budget.
func (p *Policy) shadowedBy(j int, srcs, dsts []nodeKey, budget *int) ([]int, bool) {
	if j == 0 || len(srcs) == 0 || len(dsts) == 0 {
		return nil, false
	}
	memo := map[int32]bool{}
	covers := func(i int32) bool {
		c, ok := memo[i]
		if !ok {
			c = p.coversGrant(int(i), j)
			memo[i] = c
		}
		return c
	}
	all := nodeKey{kind: keyAll}
	var by []int
	for _, dk := range dsts {
		for _, sk := range srcs {
			found := -1
			for _, d := range []nodeKey{dk, all} {
				for _, s := range []nodeKey{sk, all} {
					for _, gi := range p.index[d][s] {
						if int(gi) >= j || (found >= 0 && int(gi) >= found) {
							break
						}
						if *budget--; *budget < 0 {
							return nil, false
						}
						if covers(gi) {
							found = int(gi)
							break
						}
					}
				}
			}
			if found < 0 {
				return nil, false
			}
			if !slices.Contains(by, found) {
				by = append(by, found)
			}
		}
	}
	slices.Sort(by)
	return by, true
}

// coversGrant reports whether grant i allows, for any one linked pair,
// every request grant j allows.
func (p *Policy) coversGrant(i, j int) bool {
	gi, gj := &p.grants[i], &p.grants[j]
	if gj.connOnly() {
		return true // a connect is decided without when
	}
	if gi.when != nil || !gi.obo.covers(gj.obo) {
		return false
	}
	for k := range gj.lists {
		if gj.lists[k] == nil {
			continue
		}
		if gi.lists[k] == nil {
			return false
		}
		if itemKind(k) == itemTool && (gi.classes != nil || gj.classes != nil) {
			if !p.sameRawList(i, j, itemTool) {
				return false
			}
			continue
		}
		if !listCovers(gi.lists[k], gj.lists[k]) {
			return false
		}
	}
	return true
}

// sameRawList reports whether grants i and j write list k identically.
func (p *Policy) sameRawList(i, j int, k itemKind) bool {
	raw, _ := p.decoded()
	a, b := raw.grants[i].lists[k], raw.grants[j].lists[k]
	if a == nil || b == nil {
		return false
	}
	return slices.EqualFunc(a.items, b.items, func(x, y str) bool { return x.s == y.s })
}

// listCovers reports (soundly, not completely) whether everything b
// matches a matches too: each of a's exclusions is also one of b's, and
// each of b's includes is covered by one of a's.
func listCovers(a, b *globList) bool {
	for _, e := range a.excl {
		if !slices.ContainsFunc(b.excl, func(x glob) bool { return x.pat == e.pat }) {
			return false
		}
	}
	for _, in := range b.incl {
		if !slices.ContainsFunc(a.incl, func(x glob) bool { return globCovers(x, in) }) {
			return false
		}
	}
	return true
}

// globCovers reports (soundly) whether every string b matches a matches.
func globCovers(a, b glob) bool {
	switch {
	case a.shape == shapeAny || a.pat == b.pat:
		return true
	case a.shape == shapePrefix:
		return strings.HasPrefix(literalPrefix(b.pat), a.lit)
	case a.shape == shapeSuffix:
		return strings.HasSuffix(literalSuffix(b.pat), a.lit)
	}
	return false
}

// literalPrefix is the text of pattern p before its first wildcard (all
// of p when it has none): every string p matches starts with it.
func literalPrefix(p string) string {
	if i := strings.IndexAny(p, "*?"); i >= 0 {
		return p[:i]
	}
	return p
}

// literalSuffix is the text of p after its last wildcard.
func literalSuffix(p string) string {
	if i := strings.LastIndexAny(p, "*?"); i >= 0 {
		return p[i+1:]
	}
	return p
}

// disjoint reports (soundly) that no string matches both a and b: their
// literal prefixes, or (unless onlyPrefix) their literal suffixes,
// disagree.
func disjoint(a, b string, onlyPrefix bool) bool {
	pa, pb := literalPrefix(a), literalPrefix(b)
	n := min(len(pa), len(pb))
	if pa[:n] != pb[:n] {
		return true
	}
	if onlyPrefix {
		return false
	}
	sa, sb := literalSuffix(a), literalSuffix(b)
	n = min(len(sa), len(sb))
	return sa[len(sa)-n:] != sb[len(sb)-n:]
}

// lintExclusions warns about each "!" entry of list l (grant i's list of
// kind k) that no include of the list could meet. In a resources list an
// exclusion is matched without regard to case and against shortened
// forms of the URI (see globList), so only literal prefixes are compared,
// folded, and only when neither holds a percent-encoding.
func (p *Policy) lintExclusions(i int, k itemKind, l *strList, path string, warn warnFunc) {
	classed := k == itemTool && p.grants[i].classes != nil
	type entry struct{ class, pat string }
	split := func(s string) entry {
		if classed {
			c, pat, _ := splitClass(s)
			return entry{c, pat}
		}
		return entry{"", s}
	}
	var incl []entry
	for _, s := range l.items {
		if !strings.HasPrefix(s.s, "!") {
			incl = append(incl, split(s.s))
		}
	}
	for j, s := range l.items {
		ex, ok := strings.CutPrefix(s.s, "!")
		if !ok {
			continue
		}
		e := split(ex)
		meets := slices.ContainsFunc(incl, func(in entry) bool {
			if e.class != "" && in.class != "" && e.class != in.class {
				return false
			}
			if k != itemResource {
				return !disjoint(in.pat, e.pat, false)
			}
			if strings.Contains(in.pat, "%") || strings.Contains(e.pat, "%") {
				return true
			}
			return !disjoint(uriFold(in.pat), uriFold(e.pat), true)
		})
		if !meets {
			warn(s.off, fmt.Sprintf("%s[%d]", path, j), LintEmptyExclusion, "%q excludes nothing: no include of this list matches anything it matches", s.s)
		}
	}
}
