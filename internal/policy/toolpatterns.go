package policy

import (
	"slices"
)

// ToolPatterns returns the tools patterns of the grants that link the
// visibility's source to its destination, as written ("balance", "list_*",
// "!drop_*" for an exclusion), sorted and without duplicates: what a person
// reads to see which tools a grant gives. A pattern says nothing about a
// grant's when; Tool answers for one name. The zero Visibility has none.
func (v Visibility) ToolPatterns() []string {
	return v.toolLists(func(l *globList, out []string) []string {
		for _, g := range l.incl {
			out = append(out, g.pat)
		}
		for _, g := range l.excl {
			out = append(out, "!"+g.pat)
		}
		return out
	})
}

// LiteralTools returns the tool names that the grants linking the
// visibility's source to its destination name without a wildcard, sorted
// and without duplicates: the tools a grant is known to be about, which
// Tool can then decide one by one.
func (v Visibility) LiteralTools() []string {
	return v.toolLists(func(l *globList, out []string) []string {
		for _, g := range l.incl {
			if g.shape == shapeExact {
				out = append(out, g.pat)
			}
		}
		return out
	})
}

// toolLists collects, with add, from the tools list of every grant that
// links the visibility's source to its destination, sorted and without
// duplicates.
func (v Visibility) toolLists(add func(l *globList, out []string) []string) []string {
	if v.p == nil {
		return nil
	}
	var out []string
	for _, gi := range v.grants {
		if l := v.p.grants[gi].lists[itemTool]; l != nil {
			out = add(l, out)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
