package policy

import (
	"strconv"
	"strings"

	"github.com/tailscale/hujson"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// Trusted annotations. MCP servers describe their tools with hints
// (readOnlyHint, destructiveHint) that the specification itself calls
// untrusted: a server can claim anything. The policy's top-level
// "annotations" object says instead, per tool server, which of its tools
// are read-only and which destructive:
//
//	"annotations": {
//	  "tool:repo": {"readonly": ["get_*", "list_*"], "destructive": ["delete_*", "push"]},
//	}
//
// and a grant's tools list can then name a class: "readonly:GLOB" matches
// the tools matching GLOB that the policy classifies read-only at the
// grant's destination, "destructive:GLOB" likewise, and "!readonly:GLOB" or
// "!destructive:GLOB" exclude them ("tools": ["*", "!destructive:*"]). A
// tool matching a destructive pattern is destructive even when it also
// matches a read-only one. A tool the policy does not classify is neither,
// whatever the server says: server hints never reach a decision (the
// gateway does not even pass them to the policy).

// Tool classes.
const (
	ClassReadOnly    = "readonly"
	ClassDestructive = "destructive"
)

// rawAnnotation is one server's entry in "annotations", as read.
type rawAnnotation struct {
	server                str
	readonly, destructive *strList
}

// annotations decodes the top-level "annotations" object.
func (d *decoder) annotations(v *hujson.Value) []rawAnnotation {
	var out []rawAnnotation
	d.object(v, "annotations", func(server string, sv *hujson.Value) bool {
		a := rawAnnotation{server: str{server, memberOffset(v, server)}}
		path := "annotations." + server
		n := len(d.errs)
		d.object(sv, path, func(class string, cv *hujson.Value) bool {
			l, ok := d.stringList(cv, path+"."+class)
			switch class {
			case ClassReadOnly:
				if ok {
					a.readonly = &l
				}
			case ClassDestructive:
				if ok {
					a.destructive = &l
				}
			default:
				d.fail(memberOffset(sv, class), path, ErrInvalid, "unknown tool class %q: want %q or %q", class, ClassReadOnly, ClassDestructive)
			}
			return true
		})
		if len(d.errs) == n {
			out = append(out, a)
		}
		return true
	})
	return out
}

// toolClasses is one server's compiled classification.
type toolClasses struct {
	readonly, destructive *globList
}

// classOf returns the class the policy gives tool at dst: ClassDestructive,
// ClassReadOnly or "" (unclassified).
func (p *Policy) classOf(dst *Node, tool string) string {
	if p == nil || dst.Kind != identity.KindTool {
		return ""
	}
	tc := p.classes[string(dst.Name)]
	switch {
	case tc == nil:
		return ""
	case tc.destructive.match(tool):
		return ClassDestructive
	case tc.readonly.match(tool):
		return ClassReadOnly
	}
	return ""
}

// ToolClass returns the class the policy gives the tool called name at the
// tool node dst: "readonly", "destructive" or "" when the policy does not
// classify it. It is what grants and audit events go by; a server's own
// annotations play no part.
func (p *Policy) ToolClass(dst Node, name string) string {
	return p.classOf(&dst, name)
}

// compileAnnotations compiles "annotations" into p. Each key must be a
// tool:NAME that some grant's dst names (directly, through a group, or as
// "*"): a class declared for a server no grant reaches is a typo.
func (c *compiler) compileAnnotations(p *Policy, raw []rawAnnotation) {
	if len(raw) == 0 {
		return
	}
	p.classes = make(map[string]*toolClasses, len(raw))
	_, anyDst := p.index[nodeKey{kind: keyAll}]
	for _, a := range raw {
		path := "annotations." + a.server.s
		name, ok := strings.CutPrefix(a.server.s, "tool:")
		if _, err := identity.ParseName(name); !ok || err != nil {
			c.d.fail(a.server.off, path, ErrInvalid, "annotations key %q: want tool:NAME, a tool server", a.server.s)
			continue
		}
		if _, named := p.index[nodeKey{keyTool, name}]; !named && !anyDst && len(c.d.errs) == 0 {
			c.d.fail(a.server.off, path, ErrInvalid, "annotations for %q, which no grant's dst names", a.server.s)
			continue
		}
		tc := &toolClasses{}
		for _, cl := range []struct {
			l   *strList
			out **globList
			f   string
		}{{a.readonly, &tc.readonly, ClassReadOnly}, {a.destructive, &tc.destructive, ClassDestructive}} {
			if cl.l == nil {
				continue
			}
			for i, s := range cl.l.items {
				if strings.HasPrefix(s.s, "!") {
					c.d.fail(s.off, path+"."+cl.f+"["+strconv.Itoa(i)+"]", ErrInvalid, "glob %q: a class lists the tools it covers; '!' entries are not allowed here", s.s)
				}
			}
			*cl.out = c.globList(*cl.l, itemTool, path+"."+cl.f)
		}
		p.classes[name] = tc
	}
}

// classGlob is one entry of a tools list that names a class ("readonly:*");
// class "" is a plain entry of a list that names some class.
type classGlob struct {
	class string
	g     glob
}

// classList is a grant's tools list when it names a class.
type classList struct {
	incl, excl []classGlob
}

func (l *classList) match(class, tool string) bool {
	hit := false
	for _, e := range l.incl {
		if (e.class == "" || e.class == class) && e.g.match(tool) {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	for _, e := range l.excl {
		if (e.class == "" || e.class == class) && e.g.match(tool) {
			return false
		}
	}
	return true
}

// splitClass returns the class an entry of a tools list names and its glob.
func splitClass(entry string) (class, pattern string, ok bool) {
	for _, cl := range []string{ClassReadOnly, ClassDestructive} {
		if p, ok := strings.CutPrefix(entry, cl+":"); ok {
			return cl, p, true
		}
	}
	return "", entry, false
}

// toolClassList compiles a tools list that names a class; nil when it names
// none (then it is an ordinary glob list).
func (c *compiler) toolClassList(l strList, path string) *classList {
	named := false
	for _, s := range l.items {
		if _, _, ok := splitClass(strings.TrimPrefix(s.s, "!")); ok {
			named = true
		}
	}
	if !named {
		return nil
	}
	out := &classList{}
	for i, s := range l.items {
		excl := strings.HasPrefix(s.s, "!")
		class, pat, _ := splitClass(strings.TrimPrefix(s.s, "!"))
		e := pat
		if excl {
			e = "!" + pat
		}
		if err := checkGlob(e); err != nil {
			c.d.fail(s.off, path+"["+strconv.Itoa(i)+"]", ErrInvalid, "glob %q: %v", s.s, err)
			return nil
		}
		cg := classGlob{class: class, g: compileGlob(pat)}
		if excl {
			out.excl = append(out.excl, cg)
		} else {
			out.incl = append(out.incl, cg)
		}
	}
	if len(out.incl) == 0 {
		c.d.fail(l.off, path, ErrInvalid, "%v", errGlobOnlyExcl)
		return nil
	}
	return out
}

// matchItem reports whether grant g's list for kind k covers item, at the
// destination dst (whose classification a class entry reads).
func (p *Policy) matchItem(g *grant, k itemKind, item string, dst *Node) bool {
	if k == itemTool && g.classes != nil {
		return g.classes.match(p.classOf(dst, item), item)
	}
	return g.lists[k].match(item)
}
