package policy

import (
	"time"
)

// GrantInfo is one grant of a whole policy document as written: what
// `policy suggest` reports about the active policy's grants (which of
// them, and which of their entries, nothing used).
type GrantInfo struct {
	// Index is the grant's index in the document, Line its line.
	Index int `json:"grant"`
	Line  int `json:"line"`
	// Src and Dst are the selectors as written.
	Src []string `json:"src"`
	Dst []string `json:"dst"`
	// Lists are the tools, resources, prompts, models and paths lists as
	// written, by field name; a field the grant does not have is absent.
	Lists map[string][]string `json:"lists,omitempty"`
	When  string              `json:"when,omitempty"`
	// Approval and ApprovalTimeout are the grant's approval group and
	// how long a call waits for it ("" and 0 for none).
	Approval        string        `json:"approval,omitempty"`
	ApprovalTimeout time.Duration `json:"approval_timeout,omitempty"`
}

// Grants returns the grants of a whole document (nil for a nil Policy or
// a projection, whose grants are not the document's).
func (p *Policy) Grants() []GrantInfo {
	if p == nil || p.grantNumbers != nil {
		return nil
	}
	raw, _ := p.decoded()
	out := make([]GrantInfo, len(p.grants))
	for gi := range p.grants {
		g := &p.grants[gi]
		line, _ := lineColumn(p.doc, g.off)
		info := GrantInfo{Index: gi, Line: line, Approval: g.approval, ApprovalTimeout: g.approvalTimeout}
		if g.when != nil {
			info.When = g.when.src
		}
		if raw != nil && gi < len(raw.grants) {
			rg := &raw.grants[gi]
			info.Src, info.Dst = strs(rg.src), strs(rg.dst)
			for k, l := range rg.lists {
				if l == nil {
					continue
				}
				if info.Lists == nil {
					info.Lists = make(map[string][]string)
				}
				info.Lists[itemFields[k]] = strs(*l)
			}
		}
		out[gi] = info
	}
	return out
}

// GlobMatch reports whether the list entry pattern (a glob of a grant's
// tools, resources, prompts, models or paths, without "!") matches s, as
// a grant's list matches an included entry.
func GlobMatch(pattern, s string) bool {
	g := compileGlob(pattern)
	return g.match(s)
}

// GrantReaches reports whether grant gi links some source to dst (by its
// name, a tag it carries, or *): whether the grant is about dst at all.
func (p *Policy) GrantReaches(gi int, dst Node) bool {
	if p == nil {
		return false
	}
	kind, ok := validNode(&dst)
	if !ok {
		return false
	}
	for i := 0; ; i++ {
		k, ok := keyAt(&dst, kind, i)
		if !ok {
			return false
		}
		for _, grants := range p.index[k] {
			for _, g := range grants {
				if int(g) == gi {
					return true
				}
			}
		}
	}
}
