package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// Unmatched is a selector of a policy that matches none of the nodes it
// was checked against: a node name nobody registered or a tag no node
// carries. It is not an error (a policy may name a node before it joins),
// but often a typo that silently locks an agent out or leaves a tool
// unreachable, so 'policy apply' warns about it.
type Unmatched struct {
	// Selector is as written after group expansion: "agent:NAME",
	// "tool:NAME", "model:NAME", "admin:NAME" or "tag:NAME".
	Selector string
	// Where lists the places that use it, such as "grants[2].src (line 14)"
	// or "limits[0].dst", in document order.
	Where []string
}

// String says what is unmatched and where, on one line.
func (u Unmatched) String() string {
	what := "no node carries it"
	if !strings.HasPrefix(u.Selector, "tag:") {
		kind, _, _ := strings.Cut(u.Selector, ":")
		what = "no " + kind + " of that name is registered"
	}
	return fmt.Sprintf("%s matches no node (%s), in %s", u.Selector, what, strings.Join(u.Where, ", "))
}

// Unmatched returns the selectors of p's grants, limits and approval
// groups (groups expanded) that match none of nodes, sorted by selector. "*" matches
// every node and user:LOGIN selectors, whose nodes are a tailnet's, are
// not checked.
func (p *Policy) Unmatched(nodes []Node) []Unmatched {
	if p == nil {
		return nil
	}
	matches := func(k nodeKey) bool {
		switch k.kind {
		case keyAll, keyUser:
			return true
		case keyTag:
			return slices.ContainsFunc(nodes, func(n Node) bool { return slices.Contains(n.Tags, identity.Tag(k.name)) })
		}
		return slices.ContainsFunc(nodes, func(n Node) bool {
			nk, ok := kindKey(n.Kind)
			return ok && nk == k.kind && string(n.Name) == k.name
		})
	}
	type place struct {
		order int // grants first, then limits, each in document order
		text  string
	}
	found := map[nodeKey][]place{}
	note := func(k nodeKey, order int, text string) {
		if matches(k) {
			return
		}
		if !slices.ContainsFunc(found[k], func(pl place) bool { return pl.text == text }) {
			found[k] = append(found[k], place{order, text})
		}
	}
	for dk, bySrc := range p.index {
		for sk, grants := range bySrc {
			for _, gi := range grants {
				// A projection's grants are numbered as in the whole
				// document, whose lines it does not have.
				at := fmt.Sprintf("grants[%d]", gi)
				if p.grantNumbers != nil {
					at = fmt.Sprintf("grants[%d]", p.grantNumbers[gi])
				} else {
					line, _ := lineColumn(p.doc, p.grants[gi].off)
					at += fmt.Sprintf(" (line %d)", line)
				}
				note(dk, int(gi), at+" dst")
				note(sk, int(gi), at+" src")
			}
		}
	}
	for _, l := range p.limits {
		at := fmt.Sprintf("limits[%d]", l.index)
		for k := range l.src {
			note(k, len(p.grants)+l.index, at+" src")
		}
		for k := range l.dst {
			note(k, len(p.grants)+l.index, at+" dst")
		}
	}
	// Approval groups: an approver no registered node is cannot approve.
	for group, keys := range p.approvers {
		for k := range keys {
			note(k, len(p.grants)+len(p.limits), "approval "+group)
		}
	}
	out := make([]Unmatched, 0, len(found))
	for k, places := range found {
		slices.SortFunc(places, func(a, b place) int { return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.text, b.text)) })
		u := Unmatched{Selector: k.selector()}
		for _, pl := range places {
			u.Where = append(u.Where, pl.text)
		}
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b Unmatched) int { return cmp.Compare(a.Selector, b.Selector) })
	return out
}

// selector is k as a policy writes it.
func (k nodeKey) selector() string {
	switch k.kind {
	case keyTag:
		return k.name // kept with its "tag:" prefix
	case keyAgent:
		return "agent:" + k.name
	case keyTool:
		return "tool:" + k.name
	case keyModel:
		return "model:" + k.name
	case keyAdmin:
		return "admin:" + k.name
	case keyUser:
		return "user:" + k.name
	}
	return "*"
}
