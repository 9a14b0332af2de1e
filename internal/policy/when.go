package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
)

// whenCostLimit bounds the work one evaluation of a when may do, in CEL's
// abstract cost units. A `matches` over a long argument costs roughly its
// length, so this admits regular expressions over arguments of several
// hundred kilobytes; beyond it the evaluation fails and the request is
// denied with when_error.
const whenCostLimit = 1_000_000

// WhenResult says what a grant's when condition did for a decision.
type WhenResult uint8

// The results of evaluating a when. The zero WhenResult means no when was
// evaluated: the grant had none, or the action was a connect.
const (
	WhenNone  WhenResult = iota // no when took part in the decision
	WhenHeld                    // the deciding grant's when evaluated to true
	WhenFalse                   // a covering grant's when evaluated to false
	WhenError                   // a covering grant's when failed to evaluate
)

// String returns "held", "false" or "error", and "" for WhenNone so that
// JSON output can omit it.
func (w WhenResult) String() string {
	switch w {
	case WhenHeld:
		return "held"
	case WhenFalse:
		return "false"
	case WhenError:
		return "error"
	}
	return ""
}

// celEnv is built once per process: building an environment costs far more
// than compiling an expression in it.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	nodeType := cel.MapType(cel.StringType, cel.DynType)
	strMap := cel.MapType(cel.StringType, cel.StringType)
	return cel.NewEnv(
		cel.Variable("src", nodeType),
		cel.Variable("dst", nodeType),
		cel.Variable("method", cel.StringType),
		cel.Variable("tool", strMap),
		cel.Variable("resource", strMap),
		cel.Variable("prompt", strMap),
		cel.Variable("model", cel.StringType),
		cel.Variable("path", cel.StringType),
		cel.Variable("http_method", cel.StringType),
		cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("on_behalf_of", cel.StringType),
		cel.Variable("delegation", cel.MapType(cel.StringType, cel.DynType)),
		cel.CustomTypeAdapter(argAdapter{}),
		ext.Strings(),
		cel.ParserRecursionLimit(64),
		cel.ParserExpressionSizeLimit(MaxWhenBytes),
	)
})

// whenProg is one compiled when expression. It is safe for concurrent use.
//
// It holds two programs of the same expression. prg runs under CEL's cost
// tracker with whenCostLimit: whatever the arguments, it stops. fast runs
// without the tracker, which is most of an evaluation's cost when the
// expression is small; it is used only for a request in which every value
// the expression reads (every string, list and map in the variables it
// names, args to the bottom) has a size of at most fastMax, the largest
// size for which CEL's static estimate of the expression's worst-case cost
// stays within whenCostLimit/costMargin (the estimate is meant as an upper
// bound of what the tracker counts; costMargin covers where it is not). For such a request the tracker could not have stopped the
// evaluation, so both programs decide alike; any other request, however
// hostile, runs under the tracker.
type whenProg struct {
	src     string
	prg     cel.Program
	fast    cel.Program // nil when fastMax would be below minFastSize
	fastMax uint64
	vars    whenVars // the variables the expression names
	keys    *ArgKeys // what the expression reads in args
	args    argPaths // the argument paths it reads, for the audit trail (auditargs.go)
}

var errBackspace = errors.New(`regular expression contains a backspace: inside a CEL quoted string '\b' is a backspace, not a word boundary; write a raw string such as r'\bdelete\b'`)

// compileWhen compiles and type-checks a when expression.
func compileWhen(src string) (*whenProg, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	if len(src) > MaxWhenBytes {
		return nil, fmt.Errorf("expression is %d bytes, more than %d", len(src), MaxWhenBytes)
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	checked, iss := env.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, errors.New(strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if t := checked.OutputType(); !t.IsExactType(types.BoolType) {
		return nil, fmt.Errorf("expression has type %s, want bool (compare a dyn value explicitly, e.g. args.flag == true)", t)
	}
	if err := checkRegexLiterals(checked); err != nil {
		return nil, err
	}
	prg, err := env.Program(checked, cel.CostLimit(whenCostLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("program: %w", err)
	}
	w := &whenProg{src: src, prg: prg, vars: whenVarsOf(checked), keys: argKeysOf(checked.NativeRep().Expr()), args: argPathsOf(checked)}
	if w.fastMax, err = fastSizeBound(env, checked); err != nil {
		return nil, fmt.Errorf("cost estimate: %w", err)
	}
	if w.fastMax >= minFastSize {
		if w.fast, err = env.Program(checked, cel.EvalOptions(cel.OptOptimize)); err != nil {
			return nil, fmt.Errorf("program: %w", err)
		}
	}
	return w, nil
}

// sizeBound is a checker.CostEstimator that takes every value whose size
// CEL cannot know (a variable, a field of one, an element of a list) to be
// at most its value.
type sizeBound uint64

func (b sizeBound) EstimateSize(checker.AstNode) *checker.SizeEstimate {
	return &checker.SizeEstimate{Min: 0, Max: uint64(b)}
}

func (sizeBound) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil // CEL's own estimates, and those of the string extensions
}

// minFastSize is the least fastMax for which the fast program is kept. It
// covers what within does not count and the estimate may take to be no
// larger than fastMax: the keys of the map variables ("name", "uri",
// "kind", "tags") and a scalar converted to a string (at most 24 bytes
// for a double, about 35 for a timestamp).
const minFastSize = 64

// maxFastSizeLog2 caps the search for fastMax: no request holds a value
// of 4 GiB.
const maxFastSizeLog2 = 32

// costMargin is how far below whenCostLimit the static estimate must stay
// for the fast program to be used. CEL designs its estimate as an upper
// bound of what the tracker counts, but FuzzWhenPrograms found a path where
// it is not: a select on a value of the wrong type (args.a.b where args.a is
// a bool) ends in an error after the tracker counted 4 for an estimate of
// 3. Such deviations are a few steps, not a factor; a margin of four keeps
// them far from the limit, so the tracker still could not have stopped an
// evaluation the fast program runs.
const costMargin = 4

// fastSizeBound returns the largest power of two n such that the static
// worst-case cost of the expression, with every value it reads of size at
// most n, is within whenCostLimit/costMargin; 0 when even size 1 exceeds it. The
// estimate grows with n, so a bisection on the exponent takes six
// estimates.
func fastSizeBound(env *cel.Env, checked *cel.Ast) (uint64, error) {
	within := func(log2 int) (bool, error) {
		est, err := env.EstimateCost(checked, sizeBound(uint64(1)<<log2))
		return est.Max <= whenCostLimit/costMargin, err
	}
	if ok, err := within(0); !ok || err != nil {
		return 0, err
	}
	lo, hi := 0, maxFastSizeLog2+1 // within(lo); hi is out of reach
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		ok, err := within(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return uint64(1) << lo, nil
}

// whenVars is the set of variables an expression names, one bit each.
type whenVars uint16

// whenVarNames lists the variables of celEnv, in bit order.
var whenVarNames = [...]string{"src", "dst", "method", "tool", "resource", "prompt", "model", "path", "http_method", "args", "on_behalf_of", "delegation"}

func whenVarsOf(checked *cel.Ast) whenVars {
	var v whenVars
	idents := ast.MatchDescendants(ast.NavigateAST(checked.NativeRep()), func(e ast.NavigableExpr) bool {
		return e.Kind() == ast.IdentKind
	})
	for _, e := range idents {
		for i, n := range whenVarNames {
			if e.AsIdent() == n {
				v |= 1 << i
			}
		}
	}
	return v
}

// within reports whether every value the variables in v hold for r has a
// size of at most n: bytes of a string (never fewer than CEL's count of
// code points), entries of a map, elements of a list.
func (v whenVars) within(r *Request, n uint64) bool {
	for i, name := range whenVarNames {
		if v&(1<<i) == 0 {
			continue
		}
		var ok bool
		switch name {
		case "src":
			ok = nodeWithin(&r.Src, n)
		case "dst":
			ok = nodeWithin(&r.Dst, n)
		case "args":
			ok = jsonWithin(r.Args, n, 0)
		case "on_behalf_of", "delegation":
			ok = delegationWithin(r.Delegation, n)
		default:
			ok = uint64(len(reqString(r, name))) <= n
		}
		if !ok {
			return false
		}
	}
	return true
}

func nodeWithin(nd *Node, n uint64) bool {
	if uint64(len(nd.Name)) > n || uint64(len(nd.Kind)) > n || uint64(len(nd.Tags)) > n {
		return false
	}
	for _, t := range nd.Tags {
		if uint64(len(t)) > n {
			return false
		}
	}
	return true
}

// jsonWithin is within for decoded JSON. Past maxFindDepth it answers
// false, which sends the request to the tracked program: never an error.
func jsonWithin(v any, n uint64, depth int) bool {
	if depth > maxFindDepth {
		return false
	}
	switch x := v.(type) {
	case map[string]any:
		if uint64(len(x)) > n {
			return false
		}
		for k, e := range x {
			if uint64(len(k)) > n || !jsonWithin(e, n, depth+1) {
				return false
			}
		}
	case []any:
		if uint64(len(x)) > n {
			return false
		}
		for _, e := range x {
			if !jsonWithin(e, n, depth+1) {
				return false
			}
		}
	case string:
		return uint64(len(x)) <= n
	case json.Number:
		return uint64(len(x)) <= n // it may be read as a string
	case nil, bool, float64, int, int64:
	default:
		return false // a type this walk does not know: let the tracker judge
	}
	return true
}

// checkRegexLiterals rejects a constant `matches` pattern with a backspace
// in it. The design's own first example wrote '\\b' in JSON, which CEL reads
// as a backspace: the check it meant to make would never match anything.
func checkRegexLiterals(checked *cel.Ast) error {
	calls := ast.MatchDescendants(ast.NavigateAST(checked.NativeRep()), ast.FunctionMatcher("matches"))
	for _, c := range calls {
		for _, arg := range c.AsCall().Args() {
			if arg.Kind() != ast.LiteralKind {
				continue
			}
			if s, ok := arg.AsLiteral().(types.String); ok && strings.ContainsRune(string(s), '\b') {
				return errBackspace
			}
		}
	}
	return nil
}

// eval runs the program for r. Only a bool result counts; anything else,
// or an evaluation error, is an error and the caller denies.
func (w *whenProg) eval(r *Request) (bool, error) {
	// The activation holds a copy so that r itself does not escape: a
	// Decide that evaluates no when then allocates nothing.
	a := &activation{r: *r}
	prg := w.prg
	if w.fast != nil && w.vars.within(&a.r, w.fastMax) {
		prg = w.fast
	}
	out, _, err := prg.Eval(a)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("when returned %s, want bool", out.Type())
	}
	return bool(b), nil
}

// activation resolves a when's variables from a Request lazily: nothing is
// converted until the expression reads it, and args is handed to CEL as the
// decoder's map, converted value by value as it is read (see argAdapter).
// It is one allocation per evaluation; the maps it hands out live inside it.
type activation struct {
	r    Request
	maps [numReqMaps]reqMap
}

var _ interpreter.Activation = (*activation)(nil)

// emptyArgs stands for nil args: CEL never writes to a map it is given.
var emptyArgs = map[string]any{}

func (a *activation) ResolveName(name string) (any, bool) {
	r := &a.r
	switch name {
	case "src":
		return a.reqMap(mapSrc), true
	case "dst":
		return a.reqMap(mapDst), true
	case "method", "model", "path", "http_method":
		return types.String(reqString(r, name)), true
	case "tool":
		return a.reqMap(mapTool), true
	case "resource":
		return a.reqMap(mapResource), true
	case "prompt":
		return a.reqMap(mapPrompt), true
	case "args":
		if r.Args == nil {
			return emptyArgs, true
		}
		return r.Args, true
	case "on_behalf_of":
		return types.String(oboUser(r.Delegation)), true
	case "delegation":
		return delegationValue(r.Delegation), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// reqString returns the string a when's variable name is, or holds as its
// one field (tool.name, resource.uri, prompt.name); "" for any other name.
func reqString(r *Request, name string) string {
	switch name {
	case "method":
		return r.Method
	case "tool":
		return r.Tool
	case "resource":
		return r.Resource
	case "prompt":
		return r.Prompt
	case "model":
		return r.Model
	case "path":
		return r.Path
	case "http_method":
		return r.HTTPMethod
	}
	return ""
}

func (a *activation) reqMap(k reqMapKind) *reqMap {
	m := &a.maps[k]
	m.kind, m.r = k, &a.r
	return m
}

// reqMapKind names the map-typed variables a when sees.
type reqMapKind uint8

const (
	mapSrc reqMapKind = iota
	mapDst
	mapTool
	mapResource
	mapPrompt
	numReqMaps
)

// reqMap is one map-typed variable of a when (src, dst, tool, resource,
// prompt), read straight from the Request. Field lookups, the hot path of
// every expression (tool.name, src.tags), build nothing but the value read;
// every other operation (equality, iteration, conversion, size) is
// delegated to the standard CEL map the variable stands for, built when
// asked, so that it behaves exactly as that map does.
type reqMap struct {
	kind reqMapKind
	r    *Request
}

var _ traits.Mapper = (*reqMap)(nil)

// field returns the value under key, as the standard map would hold it.
func (m *reqMap) field(key string) (ref.Val, bool) {
	switch m.kind {
	case mapSrc, mapDst:
		n := m.node()
		switch key {
		case "name":
			return types.String(n.Name), true
		case "kind":
			return types.String(n.Kind), true
		case "tags":
			return types.NewStringList(types.DefaultTypeAdapter, tagStrings(n.Tags)), true
		}
	case mapTool:
		if key == "name" {
			return types.String(m.r.Tool), true
		}
	case mapResource:
		if key == "uri" {
			return types.String(m.r.Resource), true
		}
	case mapPrompt:
		if key == "name" {
			return types.String(m.r.Prompt), true
		}
	}
	return nil, false
}

func (m *reqMap) node() *Node {
	if m.kind == mapSrc {
		return &m.r.Src
	}
	return &m.r.Dst
}

// whole builds the standard map the variable stands for.
func (m *reqMap) whole() traits.Mapper {
	switch m.kind {
	case mapSrc, mapDst:
		return nodeValue(*m.node())
	case mapTool:
		return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{"name": m.r.Tool})
	case mapResource:
		return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{"uri": m.r.Resource})
	}
	return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{"name": m.r.Prompt})
}

func (m *reqMap) Find(key ref.Val) (ref.Val, bool) {
	if s, ok := key.(types.String); ok {
		return m.field(string(s)) // a missing string key is (nil, false), as in the standard map
	}
	return m.whole().Find(key)
}

func (m *reqMap) Get(key ref.Val) ref.Val {
	if v, ok := m.Find(key); ok {
		return v
	}
	return m.whole().Get(key) // the standard map's error for a missing or bad key
}

func (m *reqMap) Contains(key ref.Val) ref.Val {
	if s, ok := key.(types.String); ok {
		_, found := m.field(string(s))
		return types.Bool(found)
	}
	return m.whole().Contains(key)
}

func (m *reqMap) Size() ref.Val                               { return m.whole().Size() }
func (m *reqMap) Iterator() traits.Iterator                   { return m.whole().Iterator() }
func (m *reqMap) Equal(other ref.Val) ref.Val                 { return m.whole().Equal(other) }
func (m *reqMap) ConvertToNative(t reflect.Type) (any, error) { return m.whole().ConvertToNative(t) }
func (m *reqMap) ConvertToType(t ref.Type) ref.Val            { return m.whole().ConvertToType(t) }
func (m *reqMap) Type() ref.Type                              { return types.MapType }
func (m *reqMap) Value() any                                  { return m.whole().Value() }

func nodeValue(n Node) traits.Mapper {
	return types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{
		"name": string(n.Name),
		"kind": string(n.Kind),
		"tags": tagStrings(n.Tags),
	})
}

func tagStrings(tags []identity.Tag) []string {
	s := make([]string, len(tags))
	for i, t := range tags {
		s[i] = string(t)
	}
	return s
}

// argAdapter is the environment's type adapter: it converts decoded JSON
// into CEL values as the expression reads them, so that an evaluation pays
// only for the arguments it looks at. Maps and lists keep the adapter for
// their elements; json.Number becomes int when it is an integer that fits,
// double otherwise, so that args.limit > 100 works whichever way the number
// was written. Everything else is the default adapter's business.
type argAdapter struct{}

func (argAdapter) NativeToValue(v any) ref.Val {
	switch x := v.(type) {
	case map[string]any:
		return types.NewStringInterfaceMap(argAdapter{}, x)
	case []any:
		return types.NewDynamicList(argAdapter{}, x)
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return types.Int(i)
		}
		if f, err := strconv.ParseFloat(string(x), 64); err == nil && !math.IsInf(f, 0) {
			return types.Double(f)
		}
		return types.String(x)
	}
	return types.DefaultTypeAdapter.NativeToValue(v)
}
