package policy

import (
	"fmt"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// Decide answers r. It never scans every grant: the index built by Compile
// yields the grants linking r.Src to r.Dst (by kind and name, tags and *),
// and only those are checked, lowest index first. The deciding grant is the
// lowest-numbered one that allows.
//
// A connect (ActionConnect) is allowed when any grant links Src to Dst;
// `when` conditions are not evaluated for it, because a connection carries
// no tool, resource, prompt or model for them to judge: every later request
// on the connection is decided, and its when evaluated, on its own.
//
// A nil Policy denies with reason.NoPolicy.
func (p *Policy) Decide(r Request) Decision {
	d := p.decide(&r)
	if d.Grant >= 0 && p.grantNumbers != nil {
		d.Grant = p.grantNumbers[d.Grant]
	}
	return d
}

func (p *Policy) decide(r *Request) Decision {
	if p == nil {
		return Decision{Reason: reason.NoPolicy, Grant: -1}
	}
	d := Decision{Grant: -1, Version: p.version}
	srcKind, ok1 := validNode(&r.Src)
	dstKind, ok2 := validNode(&r.Dst)
	item, kind, ok3 := requestItem(r)
	if !ok1 || !ok2 || !ok3 {
		d.Reason = reason.BadRequest
		return d
	}
	if kind == itemResource {
		if unsafeURI(item) {
			d.Reason = reason.UnsafeURI
			return d
		}
		if r.Template && !isCanonicalTemplate(item) || !r.Template && !isCanonicalURI(item) {
			d.Reason = reason.NonCanonicalURI
			return d
		}
	}
	var (
		linked           bool
		best             = int32(-1)
		bestWhen         WhenResult
		falseAt, errorAt = int32(-1), int32(-1)
		// variantAt is the lowest grant whose when reads a key that the
		// arguments hold only in another case (see ArgKeys).
		variantAt = int32(-1)
		// unjudgedAt is the lowest grant whose when reads arguments a
		// record did not keep (DecideRecorded only).
		unjudgedAt = int32(-1)
	)
	for i := 0; ; i++ {
		dk, ok := keyAt(&r.Dst, dstKind, i)
		if !ok {
			break
		}
		bySrc := p.index[dk]
		if bySrc == nil {
			continue
		}
		for j := 0; ; j++ {
			sk, ok := keyAt(&r.Src, srcKind, j)
			if !ok {
				break
			}
			for _, gi := range bySrc[sk] {
				linked = true
				if best >= 0 && gi >= best {
					break // lists are ascending: nothing lower follows
				}
				if r.Action == ActionConnect {
					// on_behalf_of is not judged: a connection carries
					// no delegation, each request on it does.
					best = gi
					break
				}
				g := &p.grants[gi]
				if !g.appliesTo(r.Delegation) || !p.matchItem(g, kind, item, &r.Dst) {
					continue
				}
				if g.when == nil {
					best, bestWhen = gi, WhenNone
					continue
				}
				if (falseAt >= 0 && gi == falseAt) || (errorAt >= 0 && gi == errorAt) || gi == variantAt {
					continue // reached again through another key
				}
				if r.kept != nil && !r.kept.judges(g.when) {
					if unjudgedAt < 0 || gi < unjudgedAt {
						unjudgedAt = gi
					}
					continue
				}
				if _, bad := g.when.keys.Find(r.Args); bad {
					// The when would judge arguments without the key an
					// upstream that folds case binds: refuse, never guess.
					if variantAt < 0 || gi < variantAt {
						variantAt = gi
					}
					continue
				}
				held, err := g.when.eval(r)
				switch {
				case err != nil:
					if errorAt < 0 || gi < errorAt {
						errorAt = gi
					}
				case held:
					best, bestWhen = gi, WhenHeld
				default:
					if falseAt < 0 || gi < falseAt {
						falseAt = gi
					}
				}
			}
		}
	}
	if unjudgedAt >= 0 && (best < 0 || unjudgedAt < best) && (variantAt < 0 || unjudgedAt < variantAt) {
		// That when could have allowed, or given another reason.
		d.unjudged, d.Grant = true, int(unjudgedAt)
		return d
	}
	switch {
	case variantAt >= 0 && (best < 0 || variantAt < best):
		d.Reason, d.Grant = reason.CaseVariantKey, int(variantAt)
	case best >= 0:
		d.Allow, d.Reason, d.Grant, d.When = true, reason.Allowed, int(best), bestWhen
		d.Approval, d.ApprovalTimeout = p.grants[best].approval, p.grants[best].approvalTimeout
	case !linked:
		d.Reason = reason.NoGrant
	case errorAt >= 0:
		d.Reason, d.Grant, d.When = reason.WhenError, int(errorAt), WhenError
	case falseAt >= 0:
		d.Reason, d.Grant, d.When = reason.WhenFalse, int(falseAt), WhenFalse
	default:
		d.Reason = reason.NotGranted
	}
	return d
}

// validNode checks a request's node and returns its index kind.
func validNode(n *Node) (keyKind, bool) {
	k, ok := kindKey(n.Kind)
	if !ok || n.Name == "" && n.User == "" {
		return 0, false // a node needs a name, or a user who owns it
	}
	if !canonicalLogin(n.User) {
		return 0, false // a login not in lower case would match no selector: deny, never skip a limit
	}
	return k, true
}

// canonicalLogin reports whether s has no upper-case ASCII letter, the
// form identity.LowerLogin gives and user:LOGIN selectors are in.
func canonicalLogin(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

// requestItem returns the name the request is about and which grant list
// covers it. Connect has no item.
func requestItem(r *Request) (string, itemKind, bool) {
	var s string
	var k itemKind
	switch r.Action {
	case ActionConnect:
		return "", 0, true
	case ActionTool:
		s, k = r.Tool, itemTool
	case ActionResource:
		s, k = r.Resource, itemResource
	case ActionPrompt:
		s, k = r.Prompt, itemPrompt
	case ActionModel:
		s, k = r.Model, itemModel
	case ActionPath:
		if r.HTTPMethod == "" || r.Path == "" {
			return "", 0, false
		}
		s, k = r.HTTPMethod+" "+r.Path, itemPath
	default:
		return "", 0, false
	}
	return s, k, s != ""
}

// Links reports whether any grant links src to dst: the connect decision.
func (p *Policy) Links(src, dst Node) bool {
	return p.Decide(Request{Src: src, Dst: dst, Action: ActionConnect, Method: "connect"}).Allow
}

// Explain describes the decision in one line for people, e.g.
// "allowed by grant 2 (line 14:5), when held; policy version 7".
func (d Decision) Explain() string {
	s := string(d.Reason)
	if d.Reason == "" {
		s = "denied"
	}
	s += ": " + describe(d.Reason)
	if d.Grant >= 0 && d.Reason != "" {
		s += fmt.Sprintf("; grant %d", d.Grant)
	}
	if w := d.When.String(); w != "" {
		s += "; when " + w
	}
	if d.Approval != "" {
		s += "; held for approval by " + d.Approval + " (up to " + d.ApprovalTimeout.String() + ")"
	}
	if d.Version != "" {
		s += "; policy version " + d.Version
	}
	return s
}

// Visibility answers which items of one destination one source may see, for
// filtering tools/list, resources/list, resources/templates/list,
// prompts/list and model lists. The zero Visibility shows nothing.
//
// An item is visible when some grant linking the source to the destination
// covers it by its globs and that grant's when does not evaluate to false
// for the item with no arguments. A when that fails to evaluate (it needs
// arguments a list cannot supply) leaves the item listed: the call itself
// is decided, with its arguments, when it is made.
type Visibility struct {
	p        *Policy
	src, dst Node
	grants   []int32 // linking grants, ascending, without duplicates
	// del is the delegation the items would be asked with (VisibleFor).
	del *Delegation
	// also, scope and scoped narrow what is visible (Restrict).
	also   []Visibility
	scope  *ToolScope
	scoped bool
}

// Visible returns what src may see at dst. A nil Policy shows nothing.
func (p *Policy) Visible(src, dst Node) Visibility {
	v := Visibility{p: p, src: src, dst: dst}
	if p == nil {
		return v
	}
	srcKind, ok1 := validNode(&src)
	dstKind, ok2 := validNode(&dst)
	if !ok1 || !ok2 {
		return v
	}
	seen := make(map[int32]bool)
	for i := 0; ; i++ {
		dk, ok := keyAt(&dst, dstKind, i)
		if !ok {
			break
		}
		bySrc := p.index[dk]
		for j := 0; bySrc != nil; j++ {
			sk, ok := keyAt(&src, srcKind, j)
			if !ok {
				break
			}
			for _, gi := range bySrc[sk] {
				if !seen[gi] && !p.grants[gi].connOnly() {
					seen[gi] = true
					v.grants = append(v.grants, gi)
				}
			}
		}
	}
	return v
}

// Tool reports whether the tool called name is visible.
func (v Visibility) Tool(name string) bool {
	return v.visible(itemTool, name, Request{Action: ActionTool, Method: "tools/call", Tool: name})
}

// Resource reports whether the resource at uri is visible. Unsafe and
// non-canonical URIs (see reason.UnsafeURI, reason.NonCanonicalURI) never
// are: a client could not read them.
func (v Visibility) Resource(uri string) bool {
	if unsafeURI(uri) || !isCanonicalURI(uri) {
		return false
	}
	return v.visible(itemResource, uri, Request{Action: ActionResource, Method: "resources/read", Resource: uri})
}

// ResourceTemplate reports whether a resource template (RFC 6570, such as
// "file:///data/{path}") is visible: whether some grant's resource globs
// could match one of its expansions. Only the literal text before the first
// '{' is compared with the globs, so a template may be listed whose every
// expansion is then denied; it is never hidden when some expansion could be
// read. A template without '{' is treated as a plain URI. A template whose
// literal text is unsafe or not in canonical form is never visible: its
// expansions would be refused.
func (v Visibility) ResourceTemplate(uriTemplate string) bool {
	if unsafeURI(uriTemplate) || !isCanonicalTemplate(uriTemplate) {
		return false
	}
	prefix, _, hasVar := cutBrace(uriTemplate)
	if !hasVar {
		return v.Resource(uriTemplate)
	}
	if v.p == nil {
		return false
	}
	if !v.restricted(itemResource, uriTemplate, func(o Visibility) bool { return o.ResourceTemplate(uriTemplate) }) {
		return false
	}
	r := Request{Src: v.src, Dst: v.dst, Action: ActionResource, Method: "resources/read", Resource: uriTemplate, Delegation: v.del}
	for _, gi := range v.grants {
		g := &v.p.grants[gi]
		if g.appliesTo(v.del) && g.lists[itemResource].mayMatchExpansion(prefix) && whenVisible(g, &r) {
			return true
		}
	}
	return false
}

func cutBrace(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '{' {
			return s[:i], s[i:], true
		}
	}
	return s, "", false
}

// Prompt reports whether the prompt called name is visible.
func (v Visibility) Prompt(name string) bool {
	return v.visible(itemPrompt, name, Request{Action: ActionPrompt, Method: "prompts/get", Prompt: name})
}

// Model reports whether the model called name is visible.
func (v Visibility) Model(name string) bool {
	return v.visible(itemModel, name, Request{Action: ActionModel, Method: "model", Model: name})
}

func (v Visibility) visible(k itemKind, name string, r Request) bool {
	if v.p == nil || name == "" {
		return false
	}
	if !v.restricted(k, name, func(o Visibility) bool { return o.visible(k, name, r) }) {
		return false
	}
	r.Src, r.Dst, r.Delegation = v.src, v.dst, v.del
	for _, gi := range v.grants {
		g := &v.p.grants[gi]
		if g.appliesTo(v.del) && v.p.matchItem(g, k, name, &r.Dst) && whenVisible(g, &r) {
			return true
		}
	}
	return false
}

// whenVisible is false only when the grant's when evaluates to false.
func whenVisible(g *grant, r *Request) bool {
	if g.when == nil {
		return true
	}
	held, err := g.when.eval(r)
	return held || err != nil
}
