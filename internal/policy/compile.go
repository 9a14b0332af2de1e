package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// MaxIndexEntries caps the size of the (destination, source) index that
// Compile builds: a grant contributes one entry per pair of its expanded dst
// and src selectors, so two groups of a thousand members cost a million.
const MaxIndexEntries = 4_000_000

// Policy is a compiled policy document. It is immutable and safe for
// concurrent use; publish a new one (e.g. through an atomic.Pointer) to change
// policy. A nil *Policy denies everything with reason no_policy.
type Policy struct {
	version string
	doc     []byte
	grants  []grant
	// index maps a destination key, then a source key, to the ascending
	// indices of the grants that link them. Groups are already expanded.
	index   map[nodeKey]map[nodeKey][]int32
	nGroups int
	nTests  int
	limits  []limit
	// grantNumbers, for a compiled Projection, maps each grant to its
	// index in the whole document, which decisions report; nil for a
	// whole document.
	grantNumbers []int
	// decoded is doc decoded once, for Project: a coordinator projects
	// one policy for every gateway, and decoding a large document per
	// gateway dominated a fan-out. Kept only once asked for.
	decoded func() (*rawDoc, []error)
	// classes are the trusted tool classes by tool server name, and
	// approvers the members of each approval group (annotations.go,
	// approvals.go).
	classes   map[string]*toolClasses
	approvers map[string]map[nodeKey]bool
	// pins are the tool_pins section by server name (pins.go).
	pins map[string]ServerPins
	// auditPaths are the argument paths the audit trail keeps
	// (auditargs.go).
	auditPaths []string
	// owners is the node_owners section by kind or tag (owners.go).
	owners map[string]*owners
}

type grant struct {
	lists [numItemKinds]*globList // nil when the field is absent
	when  *whenProg               // nil when there is none
	off   int                     // byte offset of the grant in the document
	// classes, set when the tools list names a class ("readonly:*"),
	// replaces lists[itemTool] for matching (annotations.go).
	classes *classList
	// approval is the group whose approval a call needs ("" for none),
	// approvalTimeout how long it is held (approvals.go).
	approval        string
	approvalTimeout time.Duration
	// obo, when set, limits the grant to requests made on behalf of the
	// people it names (on_behalf_of, delegation.go).
	obo *oboList
}

// connOnly reports whether the grant gives connection-level access only.
func (g *grant) connOnly() bool {
	for _, l := range g.lists {
		if l != nil {
			return false
		}
	}
	return true
}

// nodeKey is what a selector matches after group expansion: a node by kind
// and name, a tag, or every node.
type nodeKey struct {
	kind keyKind
	name string
}

type keyKind uint8

const (
	keyAll keyKind = iota
	keyTag
	keyAgent
	keyTool
	keyModel
	keyAdmin
	keyUser
)

func kindKey(k identity.Kind) (keyKind, bool) {
	switch k {
	case identity.KindAgent:
		return keyAgent, true
	case identity.KindTool:
		return keyTool, true
	case identity.KindModel:
		return keyModel, true
	case identity.KindAdmin:
		return keyAdmin, true
	}
	return 0, false
}

// keyAt returns the i-th key a node is known by: its kind and name, then *,
// then each tag. It lets Decide walk a node's keys without allocating.
func keyAt(n *Node, k keyKind, i int) (nodeKey, bool) {
	switch {
	case i == 0:
		return nodeKey{k, string(n.Name)}, true
	case i == 1:
		return nodeKey{kind: keyAll}, true
	case i-2 < len(n.Tags):
		return nodeKey{keyTag, string(n.Tags[i-2])}, true
	case i-2 == len(n.Tags) && n.User != "":
		return nodeKey{keyUser, n.User}, true
	}
	return nodeKey{}, false
}

// Compile parses doc, a HuJSON policy document, compiles it and runs its
// tests. version is the label the coordinator assigned (such as "7"); every
// Decision carries it. The returned error wraps ErrSyntax, ErrInvalid or
// ErrTestFailed, and each problem names its line and column.
func Compile(doc []byte, version string) (*Policy, error) {
	raw, errs := decodeDocument(doc)
	if len(errs) > 0 {
		return nil, fmt.Errorf("compile policy: %w", errors.Join(errs...))
	}
	c := &compiler{
		d:      decoder{doc: doc},
		groups: make(map[string]*groupState, len(raw.groups)),
		globs:  make(map[string]*globList),
		whens:  make(map[string]*whenProg),
	}
	p := c.compile(raw)
	if len(c.d.errs) > 0 {
		return nil, fmt.Errorf("compile policy: %w", errors.Join(c.d.errs...))
	}
	p.version = version
	p.doc = slices.Clone(doc)
	p.decoded = sync.OnceValues(func() (*rawDoc, []error) { return decodeDocument(p.doc) })
	if errs := p.runTests(raw.tests, doc); len(errs) > 0 {
		return nil, fmt.Errorf("compile policy: %w", errors.Join(errs...))
	}
	return p, nil
}

type compiler struct {
	d      decoder
	groups map[string]*groupState
	globs  map[string]*globList
	whens  map[string]*whenProg
}

type groupState struct {
	raw      rawGroup
	state    uint8 // 0 unvisited, 1 expanding, 2 done
	expanded []nodeKey
}

func (c *compiler) compile(raw *rawDoc) *Policy {
	for _, g := range raw.groups {
		name, ok := strings.CutPrefix(g.name.s, "group:")
		if _, err := identity.ParseName(name); !ok || err != nil {
			c.d.fail(g.name.off, "groups", ErrInvalid, "group name %q: want group:NAME with NAME of lower-case letters, digits, '-' or '_'", g.name.s)
			continue
		}
		c.groups[g.name.s] = &groupState{raw: g}
	}
	for _, g := range raw.groups {
		if gs := c.groups[g.name.s]; gs != nil {
			c.expandGroup(gs, "groups."+g.name.s)
		}
	}
	p := &Policy{
		grants:  make([]grant, len(raw.grants)),
		index:   make(map[nodeKey]map[nodeKey][]int32),
		nGroups: len(raw.groups),
		nTests:  len(raw.tests),
	}
	entries := 0
	for i := range raw.grants {
		rg := &raw.grants[i]
		path := fmt.Sprintf("grants[%d]", i)
		g := &p.grants[i]
		g.off = rg.off
		src := c.expandList(rg.src, path+".src")
		dst := c.expandList(rg.dst, path+".dst")
		for k, l := range rg.lists {
			if l != nil {
				if itemKind(k) == itemPath {
					c.checkPaths(*l, path+".paths")
				}
				if itemKind(k) == itemTool {
					if g.classes = c.toolClassList(*l, path+".tools"); g.classes != nil {
						g.lists[k] = &globList{} // matched through classes
						continue
					}
				}
				g.lists[k] = c.globList(*l, itemKind(k), path+"."+itemFields[k])
			}
		}
		if rg.when != nil {
			g.when = c.when(*rg.when, path+".when")
		}
		c.compileApproval(p, rg, g, path)
		if rg.obo != nil {
			g.obo = c.oboList(*rg.obo, path+".on_behalf_of")
		}
		if len(c.d.errs) > 0 || entries > MaxIndexEntries {
			continue
		}
		for _, dk := range dst {
			bySrc := p.index[dk]
			if bySrc == nil {
				bySrc = make(map[nodeKey][]int32)
				p.index[dk] = bySrc
			}
			for _, sk := range src {
				bySrc[sk] = append(bySrc[sk], int32(i))
			}
		}
		entries += len(src) * len(dst)
		if entries > MaxIndexEntries {
			c.d.fail(rg.off, path, ErrInvalid, "the grants so far link more than %d (destination, source) pairs; use tags or * instead of enumerating large groups", MaxIndexEntries)
		}
	}
	c.compileLimits(p, raw.limits)
	c.compileAnnotations(p, raw.annotations)
	c.compilePins(p, raw.pins)
	p.auditPaths = c.auditPaths(p, raw.auditArgs)
	p.owners = c.nodeOwners(raw.owners)
	return p
}

// selector parses entry idx of the list at listPath (a src, dst or group
// member). Groups come back as their expansion.
func (c *compiler) selector(s str, listPath string, idx int, inGroup bool) []nodeKey {
	at := func() string { return listPath + "[" + strconv.Itoa(idx) + "]" } // only built for errors
	if s.s == "*" {
		if inGroup {
			c.d.fail(s.off, at(), ErrInvalid, `"*" cannot be a group member; use it in src or dst directly`)
			return nil
		}
		return []nodeKey{{kind: keyAll}}
	}
	kind, name, ok := strings.Cut(s.s, ":")
	if !ok {
		c.d.fail(s.off, at(), ErrInvalid, "selector %q: want agent:NAME, tool:NAME, model:NAME, tag:NAME, user:LOGIN, group:NAME or *", s.s)
		return nil
	}
	switch kind {
	case "agent", "tool", "model", "admin":
		if kind == "admin" && !inGroup {
			c.d.fail(s.off, at(), ErrInvalid, "selector %q: unknown kind %q here (admin:NAME may only be a member of a group, for approvals)", s.s, kind)
			return nil
		}
		if _, err := identity.ParseName(name); err != nil {
			c.d.fail(s.off, at(), ErrInvalid, "selector %q: %v", s.s, err)
			return nil
		}
		k, _ := kindKey(identity.Kind(kind))
		return []nodeKey{{k, name}}
	case "tag":
		if _, err := identity.ParseTag(s.s); err != nil {
			c.d.fail(s.off, at(), ErrInvalid, "selector %q: %v", s.s, err)
			return nil
		}
		return []nodeKey{{keyTag, s.s}}
	case "user":
		if !validLogin(name) {
			c.d.fail(s.off, at(), ErrInvalid, "selector %q: want user:LOGIN with LOGIN of 1-256 printable characters, no spaces", s.s)
			return nil
		}
		if lower := identity.LowerLogin(name); lower != name {
			// Logins are compared in lower case (a caller's login is
			// folded when it is identified): one spelling per person.
			c.d.fail(s.off, at(), ErrInvalid, "selector %q: logins are compared in lower case; write user:%s", s.s, lower)
			return nil
		}
		return []nodeKey{{keyUser, name}}
	case "group":
		gs := c.groups[s.s]
		if gs == nil {
			c.d.fail(s.off, at(), ErrInvalid, "undefined group %q", s.s)
			return nil
		}
		if gs.state == 1 {
			return c.expandGroup(gs, at())
		}
		return c.expandGroup(gs, "")
	}
	c.d.fail(s.off, at(), ErrInvalid, "selector %q: unknown kind %q (want agent, tool, model, tag, user, group or *)", s.s, kind)
	return nil
}

func (c *compiler) expandGroup(gs *groupState, path string) []nodeKey {
	switch gs.state {
	case 2:
		return gs.expanded
	case 1:
		c.d.fail(gs.raw.name.off, "groups."+gs.raw.name.s, ErrInvalid, "group %q is part of a cycle (reached again from %s)", gs.raw.name.s, path)
		gs.state = 2
		return nil
	}
	gs.state = 1
	gs.expanded = c.expandMembers(gs.raw.members, "groups."+gs.raw.name.s, true)
	gs.state = 2
	return gs.expanded
}

func (c *compiler) expandList(l strList, path string) []nodeKey {
	return c.expandMembers(l, path, false)
}

func (c *compiler) expandMembers(l strList, path string, inGroup bool) []nodeKey {
	var out []nodeKey
	var seen map[nodeKey]bool // only for long lists; short ones are scanned
	for i, s := range l.items {
		for _, k := range c.selector(s, path, i, inGroup) {
			switch {
			case len(out) < 16:
				if slices.Contains(out, k) {
					continue
				}
			case seen == nil:
				seen = make(map[nodeKey]bool, 2*len(out))
				for _, o := range out {
					seen[o] = true
				}
				fallthrough
			default:
				if seen[k] {
					continue
				}
				seen[k] = true
			}
			out = append(out, k)
		}
	}
	return out
}

func (c *compiler) globList(l strList, kind itemKind, path string) *globList {
	items := make([]string, len(l.items))
	for i, s := range l.items {
		err := checkGlob(s.s)
		if err == nil && kind == itemResource {
			err = checkResourceGlob(strings.TrimPrefix(s.s, "!"))
		}
		if err != nil {
			c.d.fail(s.off, path+"["+strconv.Itoa(i)+"]", ErrInvalid, "glob %q: %v", s.s, err)
			return nil
		}
		items[i] = s.s
	}
	key := strconv.Itoa(int(kind)) + "\x00" + strings.Join(items, "\x00")
	if gl, ok := c.globs[key]; ok {
		return gl
	}
	gl, err := newGlobList(items, kind == itemResource)
	if err != nil {
		c.d.fail(l.off, path, ErrInvalid, "%v", err)
		return nil
	}
	c.globs[key] = gl
	return gl
}

func (c *compiler) when(s str, path string) *whenProg {
	if w, ok := c.whens[s.s]; ok {
		return w
	}
	w, err := compileWhen(s.s)
	if err != nil {
		c.d.fail(s.off, path, ErrInvalid, "when: %v", err)
		return nil
	}
	c.whens[s.s] = w
	return w
}

// Version returns the label given to Compile, or "" for a nil Policy.
func (p *Policy) Version() string {
	if p == nil {
		return ""
	}
	return p.version
}

// Document returns a copy of the original document text (nil for a nil
// Policy).
func (p *Policy) Document() []byte {
	if p == nil {
		return nil
	}
	return slices.Clone(p.doc)
}

// Summary describes the policy in a few words, for 'policy validate'.
func (p *Policy) Summary() string {
	if p == nil {
		return "no policy"
	}
	return fmt.Sprintf("%d grants, %d groups, %d tests passed", len(p.grants), p.nGroups, p.nTests)
}

// validLogin reports whether s can be a user:LOGIN selector: a tailnet login
// such as "alice@example.com" or "bob@github", 1 to 256 printable ASCII
// characters without spaces. Logins are compared exactly, case included.
func validLogin(s string) bool {
	if len(s) == 0 || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
