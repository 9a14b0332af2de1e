package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
)

// Delegation is the delegation a request is made with (package
// delegation): the agent (Request.Src) acts for a person. The policy
// sees who the person is, the chain from the person down to the agent,
// and its depth; the gateway has verified all of it before asking.
type Delegation struct {
	// User is the person at the root of the chain, a canonical e-mail
	// address (identity.ParseUser), without "user:".
	User string
	// Chain lists the parties, the person first ("user:EMAIL"), then the
	// SPIFFE ID of each agent down to the one making the request.
	Chain []string
	// Depth is the number of links: 1 for a person's delegation to an
	// agent, 2 for an agent's to a sub-agent, and so on.
	Depth int
}

// oboList is a grant's compiled on_behalf_of: the people whose
// delegations the grant applies to, or any delegation at all.
type oboList struct {
	any   bool
	users map[string]bool
}

// match reports whether a request made with d is one the grant applies
// to: never one made without a delegation.
func (o *oboList) match(d *Delegation) bool {
	if d == nil || d.User == "" {
		return false
	}
	return o.any || o.users[d.User]
}

// appliesTo reports whether grant g applies to a request made with d (or
// without one, d nil): a grant without on_behalf_of applies to every
// request, one with it only to a delegated request whose person it names.
func (g *grant) appliesTo(d *Delegation) bool {
	return g.obo == nil || g.obo.match(d)
}

// oboList compiles a grant's on_behalf_of list: user:EMAIL (a canonical
// e-mail address: lower case, as identity.ParseUser gives it), group:NAME
// (its user: members; a group with none is an error, as is a member that
// is not a canonical e-mail address) and "*", any delegation.
func (c *compiler) oboList(l strList, path string) *oboList {
	o := &oboList{users: map[string]bool{}}
	if len(l.items) == 0 {
		c.d.fail(l.off, path, ErrInvalid, "must list at least one selector (user:EMAIL, group:NAME or *)")
		return nil
	}
	for i, s := range l.items {
		at := path + "[" + strconv.Itoa(i) + "]"
		switch {
		case s.s == "*":
			o.any = true
		case strings.HasPrefix(s.s, "user:"):
			email := strings.TrimPrefix(s.s, "user:")
			if u, err := identity.ParseUser(email); err != nil || string(u) != email {
				c.d.fail(s.off, at, ErrInvalid, "selector %q: want user:EMAIL with EMAIL a person's e-mail address in lower case, as sign-in records it", s.s)
				return nil
			}
			o.users[email] = true
		case strings.HasPrefix(s.s, "group:"):
			gs := c.groups[s.s]
			if gs == nil {
				c.d.fail(s.off, at, ErrInvalid, "undefined group %q", s.s)
				return nil
			}
			n := 0
			for _, k := range c.expandGroup(gs, at) {
				if k.kind != keyUser {
					continue
				}
				if u, err := identity.ParseUser(k.name); err != nil || string(u) != k.name {
					c.d.fail(s.off, at, ErrInvalid, "group %q: member user:%s is not a person's e-mail address in lower case, so no delegation can match it", s.s, k.name)
					return nil
				}
				o.users[k.name] = true
				n++
			}
			if n == 0 {
				c.d.fail(s.off, at, ErrInvalid, "group %q lists no user:EMAIL member, so no delegation can match it", s.s)
				return nil
			}
		default:
			c.d.fail(s.off, at, ErrInvalid, "selector %q: on_behalf_of takes user:EMAIL, group:NAME or *", s.s)
			return nil
		}
	}
	return o
}

// describeObo is an on_behalf_of list as written, for Who and Can.
func describeObo(l *strList) []string {
	if l == nil {
		return nil
	}
	return strs(*l)
}

// delegationValue is the `delegation` variable of a when: user, chain and
// depth; all empty for a request made without a delegation.
func delegationValue(d *Delegation) ref.Val {
	m := map[string]any{"user": "", "chain": []string{}, "depth": int64(0)}
	if d != nil {
		chain := d.Chain
		if chain == nil {
			chain = []string{}
		}
		m["user"], m["chain"], m["depth"] = d.User, chain, int64(d.Depth)
	}
	return types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
}

// oboUser is the `on_behalf_of` variable of a when: the person's e-mail
// address, "" for a request made without a delegation.
func oboUser(d *Delegation) string {
	if d == nil {
		return ""
	}
	return d.User
}

// delegationWithin is whenVars.within for the delegation variables.
func delegationWithin(d *Delegation, n uint64) bool {
	if d == nil {
		return true
	}
	if uint64(len(d.User)) > n || uint64(len(d.Chain)) > n {
		return false
	}
	for _, p := range d.Chain {
		if uint64(len(p)) > n {
			return false
		}
	}
	return true
}

// ToolScope is a delegation's scope for one service: the tools it names,
// as a grant's tools list matches them (the same glob syntax, "!" entries
// exclude).
type ToolScope struct{ l *globList }

// NewToolScope compiles the tool globs of a delegation's scope.
func NewToolScope(globs []string) (*ToolScope, error) {
	for _, g := range globs {
		if err := checkGlob(g); err != nil {
			return nil, fmt.Errorf("%w: tool glob %q: %v", ErrInvalid, g, err)
		}
	}
	l, err := newGlobList(globs, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &ToolScope{l: l}, nil
}

// Match reports whether the scope covers the tool called name. A nil
// scope covers nothing.
func (s *ToolScope) Match(name string) bool {
	return s != nil && s.l.match(name)
}

// VisibleFor is Visible for a request made with the delegation d (nil:
// none): grants with on_behalf_of count only when they name d's person.
func (p *Policy) VisibleFor(src, dst Node, d *Delegation) Visibility {
	v := p.Visible(src, dst)
	v.del = d
	return v
}

// Restrict narrows v to what o also shows (both must see an item), and,
// with scope set, to tools scope covers: a delegation's view is the agent's,
// its grantors' and its scope's together. With a scope, no resource or
// prompt is visible: a delegation narrowed to tools is narrowed to tools.
func (v Visibility) Restrict(o []Visibility, scope *ToolScope, scoped bool) Visibility {
	v.also = append(append([]Visibility(nil), v.also...), o...)
	if scoped {
		v.scope, v.scoped = scope, true
	}
	return v
}

// restricted reports whether the narrowing of v (Restrict) lets an item
// of kind k called name be shown.
func (v Visibility) restricted(k itemKind, name string, show func(Visibility) bool) bool {
	if v.scoped && (k != itemTool || !v.scope.Match(name)) {
		return false
	}
	for _, o := range v.also {
		if !show(o) {
			return false
		}
	}
	return true
}

// covers reports whether a grant limited by o (nil: not limited) applies
// to every request one limited by j applies to.
func (o *oboList) covers(j *oboList) bool {
	switch {
	case o == nil:
		return true
	case j == nil:
		return false
	case o.any:
		return true
	case j.any:
		return false
	}
	for u := range j.users {
		if !o.users[u] {
			return false
		}
	}
	return true
}

// lintGrantors warns about each on_behalf_of entry naming people whom no
// grant gives anything: a gateway asks the policy about the person (a
// node only user:EMAIL names) before a delegated request goes on, and
// only a src of user:EMAIL or "*" can match that node. Sound: with any
// grant from "*", nothing is warned.
func (p *Policy) lintGrantors(raw *rawDoc, srcs [][]nodeKey, warn warnFunc) {
	have := map[string]bool{}
	for _, keys := range srcs {
		for _, k := range keys {
			switch k.kind {
			case keyAll:
				return
			case keyUser:
				have[k.name] = true
			}
		}
	}
	var groups map[string][]string
	for i := range p.grants {
		o, rg := p.grants[i].obo, &raw.grants[i]
		if o == nil || rg.obo == nil {
			continue
		}
		for j, s := range rg.obo.items {
			var missing []string
			switch {
			case strings.HasPrefix(s.s, "user:"):
				if u := strings.TrimPrefix(s.s, "user:"); !have[u] {
					missing = append(missing, u)
				}
			case strings.HasPrefix(s.s, "group:"):
				if groups == nil {
					groups = rawGroups(raw)
				}
				some := false
				for _, m := range groups[s.s] {
					if u, ok := strings.CutPrefix(m, "user:"); ok && have[u] {
						some = true
					}
				}
				if !some {
					missing = append(missing, "none of its members")
				}
			}
			if len(missing) > 0 {
				warn(s.off, fmt.Sprintf("grants[%d].on_behalf_of[%d]", i, j), LintNoGrantorRights,
					"no grant gives %s (%s) anything: every request made for them exceeds their rights (delegation_exceeds_grantor); grant the person too", s.s, strings.Join(missing, ", "))
			}
		}
	}
}
