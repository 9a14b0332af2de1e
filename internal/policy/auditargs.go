package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/tailscale/hujson"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// What the audit trail keeps of a request's arguments, so that a decision
// can be made again later (`agentmesh policy replay`) exactly as the
// gateway made it. The rule is the policy's own: an argument value is kept
// only when a `when` condition of the policy reads it, at the path it
// reads, and never under a key named like a secret (secretKeyParts).
// Everything else in the arguments is never recorded. A when whose
// arguments were not kept cannot be evaluated again; replay counts such
// requests as not judged rather than guessing.
//
// Paths are constant field selections from args: args.opts.mode reads
// "opts.mode", args["a b"] reads "a b", "k" in args reads "k", has(args.x)
// reads "x". A path ends where the expression stops selecting constant
// keys (a list index, a computed key, a comprehension, a function), and the
// whole value there is kept: args.items.all(i, i.price > 0) keeps "items".
// A when that reads args itself as a value (size(args), iterating over its
// keys) reads everything, which is never kept: its requests are not judged.

// secretWords are the words of an argument key that mark it as a secret
// (compared lower-case, words split at anything not a letter or digit and
// at lower-to-upper case changes: "accessToken", "client_secret",
// "X-Api-Key"); secretPairs are two adjacent words that do. A path with
// such a key anywhere is not kept, even when a when reads it. Whole words,
// so that "max_tokens" (a model request's field) is not a secret.
var (
	secretWords = map[string]bool{
		"password": true, "passwords": true, "passwd": true, "pwd": true, "passphrase": true,
		"secret": true, "secrets": true, "token": true, "auth": true, "authorization": true,
		"cookie": true, "cookies": true, "credential": true, "credentials": true,
		"apikey": true, "privatekey": true, "accesskey": true, "secretkey": true,
	}
	secretPairs = map[string]bool{"apikey": true, "privatekey": true, "accesskey": true, "secretkey": true}
)

// secretKey reports whether an argument key is named like a secret.
func secretKey(k string) bool {
	words := keyWords(k)
	for i, w := range words {
		if secretWords[w] || i > 0 && secretPairs[words[i-1]+w] {
			return true
		}
	}
	return false
}

// keyWords splits a key into lower-case words.
func keyWords(k string) []string {
	var words []string
	var cur []rune
	var prevLower bool
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	for _, r := range k {
		switch {
		case unicode.IsUpper(r):
			if prevLower {
				flush()
			}
			cur, prevLower = append(cur, r), false
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			cur, prevLower = append(cur, r), true
		default:
			flush()
			prevLower = false
		}
	}
	flush()
	return words
}

// argPaths is what one when reads in args: its constant paths (dotted,
// each a slice of keys) and whether it also reads args whole.
type argPaths struct {
	paths [][]string
	whole bool
}

// argPathsOf extracts the argument paths of a checked when.
func argPathsOf(checked *cel.Ast) argPaths {
	var out argPaths
	idents := ast.MatchDescendants(ast.NavigateAST(checked.NativeRep()), func(e ast.NavigableExpr) bool {
		return e.Kind() == ast.IdentKind && e.AsIdent() == "args"
	})
	for _, id := range idents {
		var path []string
		cur := id
		for {
			parent, ok := cur.Parent()
			if !ok {
				break
			}
			key, ok := selectedKey(parent, cur)
			if !ok {
				break
			}
			path = append(path, key)
			if parent.Kind() == ast.CallKind && parent.AsCall().FunctionName() == operators.In {
				break // "k" in args tests presence: nothing selects below it
			}
			cur = parent
		}
		if len(path) == 0 {
			out.whole = true
			continue
		}
		out.paths = append(out.paths, path)
	}
	return out
}

// selectedKey returns the constant key parent selects from its child
// operand: a field selection, an index with a string literal, or a string
// literal tested with in.
func selectedKey(parent, child ast.NavigableExpr) (string, bool) {
	switch parent.Kind() {
	case ast.SelectKind:
		s := parent.AsSelect()
		if s.Operand().ID() == child.ID() {
			return s.FieldName(), true
		}
	case ast.CallKind:
		c := parent.AsCall()
		args := c.Args()
		if len(args) != 2 || c.IsMemberFunction() {
			return "", false
		}
		operand, key := args[0], args[1]
		switch c.FunctionName() {
		case operators.Index:
		case operators.In:
			operand, key = args[1], args[0]
		default:
			return "", false
		}
		if operand.ID() != child.ID() || key.Kind() != ast.LiteralKind {
			return "", false
		}
		if s, ok := key.AsLiteral().(types.String); ok {
			return string(s), true
		}
	}
	return "", false
}

// keptPaths is a set of argument paths as a tree: a node marked whole
// keeps the entire value at its path.
type keptPaths struct {
	fields map[string]*keptPaths
	whole  bool
}

// add keeps path; a path under one already kept whole adds nothing, and a
// path above kept ones replaces them.
func (k *keptPaths) add(path []string) {
	n := k
	for _, key := range path {
		if n.whole {
			return
		}
		if n.fields == nil {
			n.fields = make(map[string]*keptPaths)
		}
		c := n.fields[key]
		if c == nil {
			c = &keptPaths{}
			n.fields[key] = c
		}
		n = c
	}
	n.whole, n.fields = true, nil
}

// covers reports whether every value at path is kept.
func (k *keptPaths) covers(path []string) bool {
	n := k
	for _, key := range path {
		if n.whole {
			return true
		}
		if n = n.fields[key]; n == nil {
			return false
		}
	}
	return n.whole
}

// list returns the kept paths, dotted and sorted.
func (k *keptPaths) list() []string {
	var out []string
	var walk func(n *keptPaths, prefix string)
	walk = func(n *keptPaths, prefix string) {
		for key, c := range n.fields {
			p := key
			if prefix != "" {
				p = prefix + "." + key
			}
			if c.whole {
				out = append(out, p)
			} else {
				walk(c, p)
			}
		}
	}
	walk(k, "")
	slices.Sort(out)
	return out
}

// parseKeptPaths reads back a list made by list. Keys holding a dot
// cannot be told apart from paths, so such a key is recorded as a deeper
// path: replay then finds the when's real path not covered and does not
// judge, which is safe.
func parseKeptPaths(paths []string) *keptPaths {
	k := &keptPaths{}
	for _, p := range paths {
		k.add(strings.Split(p, "."))
	}
	return k
}

// The audit_args section of a policy document adjusts the rule:
//
//	"audit_args": {
//	  "keep": "when",                 // the default; "none" keeps no argument value
//	  "omit": ["customer.ssn", "notes"], // paths (and what is under them) never kept
//	}
//
// A path omitted, or under a secret-named key, is not kept even when a when
// reads it: replay then counts the requests whose decision depended on that
// when as not judged.
type rawAuditArgs struct {
	off  int
	keep *str
	omit *strList
}

// Values of audit_args.keep.
const (
	AuditKeepWhen = "when"
	AuditKeepNone = "none"
)

type projectedAuditArgs struct {
	Keep string   `json:"keep,omitempty"`
	Omit []string `json:"omit,omitempty"`
}

func projectAuditArgs(a *rawAuditArgs) *projectedAuditArgs {
	if a == nil {
		return nil
	}
	out := &projectedAuditArgs{}
	if a.keep != nil {
		out.Keep = a.keep.s
	}
	if a.omit != nil {
		out.Omit = strs(*a.omit)
	}
	return out
}

func (d *decoder) auditArgs(v *hujson.Value) *rawAuditArgs {
	a := &rawAuditArgs{off: v.StartOffset}
	d.object(v, "audit_args", func(name string, fv *hujson.Value) bool {
		switch name {
		case "keep":
			if s, ok := d.string(fv, "audit_args.keep"); ok {
				a.keep = &s
			}
		case "omit":
			if l, ok := d.stringList(fv, "audit_args.omit"); ok {
				a.omit = &l
			}
		default:
			return false
		}
		return true
	})
	return a
}

// auditPaths computes the paths p keeps: those its whens read, minus any
// under a secret-named key or an omitted path, or none.
func (c *compiler) auditPaths(p *Policy, a *rawAuditArgs) []string {
	var omit [][]string
	if a != nil {
		if a.keep != nil && a.keep.s != AuditKeepWhen {
			if a.keep.s != AuditKeepNone {
				c.d.fail(a.keep.off, "audit_args.keep", ErrInvalid, "want %q or %q, got %q", AuditKeepWhen, AuditKeepNone, a.keep.s)
			}
			return nil
		}
		if a.omit != nil {
			for i, s := range a.omit.items {
				path := strings.Split(s.s, ".")
				if slices.Contains(path, "") {
					c.d.fail(s.off, fmt.Sprintf("audit_args.omit[%d]", i), ErrInvalid, "want a dotted argument path such as customer.ssn, got %q", s.s)
				}
				omit = append(omit, path)
			}
		}
	}
	k := &keptPaths{}
	for i := range p.grants {
		w := p.grants[i].when
		if w == nil {
			continue
		}
		for _, path := range w.args.paths {
			if slices.ContainsFunc(path, secretKey) || slices.ContainsFunc(omit, func(o []string) bool { return hasPrefix(path, o) || hasPrefix(o, path) }) {
				continue
			}
			k.add(path)
		}
	}
	return k.list()
}

// hasPrefix reports whether path starts with the keys of prefix.
func hasPrefix(path, prefix []string) bool {
	return len(path) >= len(prefix) && slices.Equal(path[:len(prefix)], prefix)
}

// AuditArgPaths returns the argument paths whose values the audit trail
// keeps for a request decided by p (see the rule at the top of
// auditargs.go), dotted and sorted; nil when p's whens read no argument
// or p is nil.
func (p *Policy) AuditArgPaths() []string {
	if p == nil {
		return nil
	}
	return p.auditPaths
}

// KeepArgs returns the JSON object a record keeps of args under paths (as
// AuditArgPaths returns them; args as the strict decoder gives them, with
// numbers as json.Number, so that they are written back as sent): the values args has at those paths, and
// null under any key spelled like a kept key in another case, so that a
// case_variant_key refusal can be decided again. A value to be kept whole
// that holds a secret-named key anywhere inside is withheld: kept lists
// the paths actually kept, which the record must name (a when reading a
// withheld path is then not judged). It returns "" for nil args, and ok
// false when the kept text exceeds limit bytes.
func KeepArgs(paths []string, args map[string]any, limit int) (text string, kept []string, ok bool) {
	if len(paths) == 0 {
		return "", nil, true
	}
	var withheld []string
	var v map[string]any
	if args != nil {
		v = project(parseKeptPaths(paths), args, "", &withheld)
	}
	kept = paths
	if len(withheld) > 0 {
		kept = slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return slices.Contains(withheld, p) })
	}
	if v == nil {
		return "", kept, true
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	if err := enc.Encode(v); err != nil {
		return "", kept, false
	}
	s := strings.TrimSuffix(b.String(), "\n")
	if len(s) > limit {
		return "", kept, false
	}
	return s, kept, true
}

// project keeps of v what k keeps; prefix is v's dotted path. Values kept
// whole that hold a secret-named key are left out and their paths added to
// withheld.
func project(k *keptPaths, v map[string]any, prefix string, withheld *[]string) map[string]any {
	out := make(map[string]any)
	for key, val := range v {
		c, exact := k.fields[key]
		if !exact {
			for f := range k.fields {
				if strings.EqualFold(f, key) {
					out[key] = nil
					break
				}
			}
			continue
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		if m, isMap := val.(map[string]any); isMap && !c.whole {
			out[key] = project(c, m, path, withheld)
			continue
		}
		if holdsSecret(val, 0) {
			*withheld = append(*withheld, path)
			continue
		}
		out[key] = val
	}
	return out
}

// holdsSecret reports whether v has a secret-named key at any depth (or is
// nested too deep to tell).
func holdsSecret(v any, depth int) bool {
	if depth > maxFindDepth {
		return true
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretKey(k) || holdsSecret(e, depth+1) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if holdsSecret(e, depth+1) {
				return true
			}
		}
	}
	return false
}

// judges reports whether w can be evaluated on arguments that kept k: it
// reads no argument outside k and does not read args whole.
func (k *keptPaths) judges(w *whenProg) bool {
	if w.args.whole {
		return false
	}
	for _, p := range w.args.paths {
		if !k.covers(p) {
			return false
		}
	}
	return true
}

// KeptArgs is the set of argument paths one record kept
// (audit.Basis.ArgPaths), parsed once; replay reuses it for every event
// that kept the same paths. The nil *KeptArgs kept nothing.
type KeptArgs struct{ k *keptPaths }

// ParseKeptArgs parses the dotted paths a record lists.
func ParseKeptArgs(paths []string) *KeptArgs {
	return &KeptArgs{k: parseKeptPaths(paths)}
}

// DecideRecorded decides r as Decide does, for a request read back from
// the audit trail whose arguments are only those kept at the paths of
// kept. It reports judged false, with Grant naming the grant, when the
// answer depends on a when that reads an argument the record did not keep
// (or reads args whole): that when could have gone either way.
func (p *Policy) DecideRecorded(r Request, kept *KeptArgs) (d Decision, judged bool) {
	r.kept = &keptPaths{}
	if kept != nil && kept.k != nil {
		r.kept = kept.k
	}
	d = p.decide(&r)
	if d.Grant >= 0 && p.grantNumbers != nil {
		d.Grant = p.grantNumbers[d.Grant]
	}
	return d, !d.unjudged
}
