package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
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
		ext.Strings(),
		cel.ParserRecursionLimit(64),
		cel.ParserExpressionSizeLimit(MaxWhenBytes),
	)
})

// whenProg is one compiled when expression. It is safe for concurrent use.
type whenProg struct {
	src  string
	prg  cel.Program
	keys *ArgKeys // what the expression reads in args
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
	return &whenProg{src: src, prg: prg, keys: argKeysOf(checked.NativeRep().Expr())}, nil
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
	out, _, err := w.prg.Eval(&activation{r: *r})
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("when returned %s, want bool", out.Type())
	}
	return bool(b), nil
}

// activation resolves a when's variables from a Request lazily, so an
// expression that only looks at tool.name never pays for converting args.
type activation struct {
	r Request
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) ResolveName(name string) (any, bool) {
	r := &a.r
	switch name {
	case "src":
		return nodeValue(r.Src), true
	case "dst":
		return nodeValue(r.Dst), true
	case "method":
		return types.String(r.Method), true
	case "tool":
		return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{"name": r.Tool}), true
	case "resource":
		return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{"uri": r.Resource}), true
	case "prompt":
		return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{"name": r.Prompt}), true
	case "model":
		return types.String(r.Model), true
	case "path":
		return types.String(r.Path), true
	case "http_method":
		return types.String(r.HTTPMethod), true
	case "args":
		m, _ := celArg(r.Args).(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		return types.NewStringInterfaceMap(types.DefaultTypeAdapter, m), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

func nodeValue(n Node) ref.Val {
	tags := make([]string, len(n.Tags))
	for i, t := range n.Tags {
		tags[i] = string(t)
	}
	return types.NewStringInterfaceMap(types.DefaultTypeAdapter, map[string]any{
		"name": string(n.Name),
		"kind": string(n.Kind),
		"tags": tags,
	})
}

// celArg converts decoded JSON into values CEL understands: json.Number
// becomes int when it is an integer that fits, double otherwise, so that
// args.limit > 100 works whichever way the number was written.
func celArg(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = celArg(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = celArg(e)
		}
		return l
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(string(x), 64); err == nil && !math.IsInf(f, 0) {
			return f
		}
		return string(x)
	}
	return v
}
