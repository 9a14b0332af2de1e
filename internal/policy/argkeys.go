package policy

import (
	"slices"
	"strings"

	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// ArgKeys is a set of keys that are read in a JSON value, by path: the keys
// `when` expressions read in args, or the fields a gateway reads in a body.
// It exists to close one bypass. The strict decoder refuses two keys of one
// object that differ only in case, but a LONE key spelled with other
// capitals ("Max_Tokens", "SQL") is invisible to code that reads the exact
// key, while an upstream that binds keys case-insensitively (Go's
// encoding/json does, folding K and ſ too) reads it as the key the policy
// looked for: `!has(args.max_tokens) || args.max_tokens <= 4096` holds for
// {"Max_Tokens": 100000}. [ArgKeys.Find] refuses such keys.
//
// Paths are matched by position: a key is checked against the keys read at
// its own depth and under its own parents, so a nested "Temperature" in a
// tool's JSON schema is not refused because a when reads args.temperature.
// Arrays are transparent (args.items[0].price and args.items.all(i,
// i.price > 0) both read "price" in the elements of items), and a key read
// through a computed index (args.m[k].x) is read under every key of m.
//
// A when that reads keys dynamically (iterating over the keys of a map, an
// index or "in" with a computed key) sees keys exactly as they were sent;
// such an expression must compare keys case-insensitively itself (for
// example with lowerAscii()), since no fixed spelling can be enforced.
//
// The zero or nil *ArgKeys reads nothing and refuses nothing.
type ArgKeys struct {
	root *keyNode
}

// keyNode is one position in a JSON value.
type keyNode struct {
	fields map[string]*keyNode // keys read here, exactly as spelled
	any    *keyNode            // what is read under every key (a computed index)
}

func (n *keyNode) child(k string) *keyNode {
	if n.fields == nil {
		n.fields = make(map[string]*keyNode)
	}
	c := n.fields[k]
	if c == nil {
		c = &keyNode{}
		n.fields[k] = c
	}
	return c
}

func (n *keyNode) anyChild() *keyNode {
	if n.any == nil {
		n.any = &keyNode{}
	}
	return n.any
}

// NewArgKeys returns the ArgKeys reading the given dotted paths, such as
// "model" and "stream_options.include_usage".
func NewArgKeys(paths ...string) *ArgKeys {
	k := &ArgKeys{root: &keyNode{}}
	for _, p := range paths {
		n := k.root
		for f := range strings.SplitSeq(p, ".") {
			n = n.child(f)
		}
	}
	return k
}

// Find returns a key of v, at a position where a key is read, that differs
// from a key read there only in case (Unicode simple folding, as
// strings.EqualFold and encoding/json compare). It returns "" and false
// when there is none.
func (k *ArgKeys) Find(v map[string]any) (string, bool) {
	if k == nil || k.root == nil || v == nil {
		return "", false
	}
	return k.root.find(v, 0)
}

// maxFindDepth bounds the walk; decoded values are already bounded by the
// strict decoder's depth limit, this keeps Find safe for any caller.
const maxFindDepth = 128

func (n *keyNode) find(v any, depth int) (string, bool) {
	if depth > maxFindDepth {
		return "", false
	}
	switch x := v.(type) {
	case map[string]any:
		if n.fields == nil && n.any == nil {
			return "", false
		}
		for key, val := range x {
			c, exact := n.fields[key]
			if !exact && n.caseVariant(key) {
				return key, true
			}
			if c != nil {
				if bad, ok := c.find(val, depth+1); ok {
					return bad, true
				}
			}
			if n.any != nil {
				if bad, ok := n.any.find(val, depth+1); ok {
					return bad, true
				}
			}
		}
	case []any:
		// Arrays are transparent; an element read through a computed index
		// was recorded under any.
		for _, e := range x {
			if bad, ok := n.find(e, depth+1); ok {
				return bad, true
			}
			if n.any != nil {
				if bad, ok := n.any.find(e, depth+1); ok {
					return bad, true
				}
			}
		}
	}
	return "", false
}

// caseVariant reports whether key, which is not read here, differs from a
// key read here only in case.
func (n *keyNode) caseVariant(key string) bool {
	for f := range n.fields {
		if strings.EqualFold(f, key) {
			return true
		}
	}
	return false
}

// empty reports whether k reads no key at all.
func (k *ArgKeys) empty() bool {
	return k == nil || k.root == nil || len(k.root.fields) == 0 && k.root.any == nil
}

// argKeysOf extracts from a checked when expression the keys it reads in
// args: field selections and has() on args and below, indexes with
// constant strings, "KEY" in args, through comprehension variables,
// conditionals, list literals and list concatenation.
func argKeysOf(e ast.Expr) *ArgKeys {
	k := &ArgKeys{root: &keyNode{}}
	w := keyWalker{root: k.root}
	w.walk(e, nil)
	return k
}

type keyWalker struct {
	root *keyNode
}

// scope binds comprehension variables to the positions their values come
// from (nil for a variable that holds no part of args). Inner bindings
// come last and shadow outer ones.
type scope []binding

type binding struct {
	name  string
	nodes []*keyNode
}

func (s scope) lookup(name string) ([]*keyNode, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].name == name {
			return s[i].nodes, true
		}
	}
	return nil, false
}

func (s scope) with(name string, nodes []*keyNode) scope {
	return append(slices.Clip(s), binding{name, nodes})
}

// walk records the keys e reads and returns the positions in args that the
// value of e may be (nil when e is not a part of args).
func (w *keyWalker) walk(e ast.Expr, sc scope) []*keyNode {
	switch e.Kind() {
	case ast.IdentKind:
		name := e.AsIdent()
		if nodes, ok := sc.lookup(name); ok {
			return nodes
		}
		if name == "args" {
			return []*keyNode{w.root}
		}
	case ast.SelectKind:
		s := e.AsSelect()
		var out []*keyNode
		for _, n := range w.walk(s.Operand(), sc) {
			out = append(out, n.child(s.FieldName()))
		}
		return out
	case ast.CallKind:
		return w.call(e.AsCall(), sc)
	case ast.ListKind:
		var out []*keyNode
		for _, el := range e.AsList().Elements() {
			out = append(out, w.walk(el, sc)...)
		}
		return out
	case ast.MapKind:
		for _, en := range e.AsMap().Entries() {
			me := en.AsMapEntry()
			w.walk(me.Key(), sc)
			w.walk(me.Value(), sc)
		}
	case ast.StructKind:
		for _, f := range e.AsStruct().Fields() {
			w.walk(f.AsStructField().Value(), sc)
		}
	case ast.ComprehensionKind:
		return w.comprehension(e.AsComprehension(), sc)
	}
	return nil
}

func (w *keyWalker) call(c ast.CallExpr, sc scope) []*keyNode {
	args := c.Args()
	if c.IsMemberFunction() {
		w.walk(c.Target(), sc)
	}
	switch c.FunctionName() {
	case operators.Index, operators.OptIndex:
		if len(args) != 2 {
			break
		}
		base := w.walk(args[0], sc)
		w.walk(args[1], sc)
		key, isStr, isNum := literalKey(args[1])
		var out []*keyNode
		for _, n := range base {
			switch {
			case isStr:
				out = append(out, n.child(key))
			case isNum:
				out = append(out, n) // a list element: arrays are transparent
			default:
				out = append(out, n.anyChild())
			}
		}
		return out
	case operators.In, operators.OldIn:
		if len(args) != 2 {
			break
		}
		w.walk(args[0], sc)
		key, isStr, _ := literalKey(args[0])
		for _, n := range w.walk(args[1], sc) {
			if isStr {
				n.child(key)
			}
		}
		return nil
	case operators.Conditional:
		if len(args) == 3 {
			w.walk(args[0], sc)
			return append(w.walk(args[1], sc), w.walk(args[2], sc)...)
		}
	case operators.Add, "dyn":
		// List concatenation (as the filter macro builds its result) and
		// dyn() pass their operands' positions on.
		var out []*keyNode
		for _, a := range args {
			out = append(out, w.walk(a, sc)...)
		}
		return out
	}
	for _, a := range args {
		w.walk(a, sc)
	}
	return nil
}

// literalKey reports whether e is a string or integer literal.
func literalKey(e ast.Expr) (key string, isStr, isNum bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false, false
	}
	switch v := e.AsLiteral().(type) {
	case types.String:
		return string(v), true, false
	case types.Int, types.Uint:
		return "", false, true
	}
	return "", false, false
}

func (w *keyWalker) comprehension(c ast.ComprehensionExpr, sc scope) []*keyNode {
	rng := w.walk(c.IterRange(), sc)
	// Over a list the variable is an element (same position, arrays being
	// transparent); over a map it is a key, whose values are then read
	// through an index. Two-variable forms bind the value second.
	inner := sc.with(c.IterVar(), rng)
	if c.HasIterVar2() {
		var vals []*keyNode
		for _, n := range rng {
			vals = append(vals, n.anyChild())
		}
		inner = inner.with(c.IterVar2(), vals)
	}
	accu := w.walk(c.AccuInit(), sc)
	withAccu := inner.with(c.AccuVar(), accu)
	w.walk(c.LoopCondition(), withAccu)
	accu = append(accu, w.walk(c.LoopStep(), withAccu)...)
	withAccu = inner.with(c.AccuVar(), accu)
	w.walk(c.LoopCondition(), withAccu)
	w.walk(c.LoopStep(), withAccu)
	return w.walk(c.Result(), sc.with(c.AccuVar(), accu))
}
