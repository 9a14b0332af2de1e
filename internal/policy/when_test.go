package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
)

// eagerActivation is the reference the lazy activation must agree with:
// every variable converted up front into standard CEL maps, numbers in
// args converted by a deep copy.
type eagerActivation struct{ r *Request }

func (a eagerActivation) ResolveName(name string) (any, bool) {
	r := a.r
	strMap := func(k, v string) ref.Val {
		return types.NewStringStringMap(types.DefaultTypeAdapter, map[string]string{k: v})
	}
	switch name {
	case "src":
		return nodeValue(r.Src), true
	case "dst":
		return nodeValue(r.Dst), true
	case "method":
		return types.String(r.Method), true
	case "tool":
		return strMap("name", r.Tool), true
	case "resource":
		return strMap("uri", r.Resource), true
	case "prompt":
		return strMap("name", r.Prompt), true
	case "model":
		return types.String(r.Model), true
	case "path":
		return types.String(r.Path), true
	case "http_method":
		return types.String(r.HTTPMethod), true
	case "args":
		m, _ := deepConvert(r.Args).(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		return types.NewStringInterfaceMap(types.DefaultTypeAdapter, m), true
	}
	return nil, false
}

func (eagerActivation) Parent() interpreter.Activation { return nil }

func deepConvert(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepConvert(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepConvert(e)
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

// whenEquivalenceExprs touch every variable in every way CEL can look at a
// map: field, index, in, has, size, equality, iteration, conversion, errors.
var whenEquivalenceExprs = []string{
	`tool.name == 'query'`,
	`tool == {'name': 'query'}`,
	`{'name': 'query'} == tool`,
	`size(tool) == 1 && 'name' in tool && !('uri' in tool)`,
	`tool.all(k, k == 'name')`,
	`tool.exists(k, tool[k].startsWith('q'))`,
	`tool['nope'] == 'x'`,
	`dyn(tool)[1] == 'x'`,
	`has(tool.name) && !has(tool.other)`,
	`string(dyn(tool)) == 'x'`,
	`type(tool) == map && type(src) == map`,
	`resource.uri.startsWith('db://') || prompt.name == 'p'`,
	`resource == prompt`,
	`'tag:ops' in src.tags && src.kind == 'agent' && dst.name == 'db'`,
	`src.tags.exists(t, t.endsWith('ops'))`,
	`size(src) == 3 && size(src.tags) == 2`,
	`src == dst`,
	`src == {'name': 'fraud', 'kind': 'agent', 'tags': ['tag:ops', 'tag:x']}`,
	`src.all(k, k in ['name', 'kind', 'tags'])`,
	`has(src.user)`,
	`src['user'] == 'x'`,
	`args.limit > 100`,
	`type(args.limit) == int && type(args.huge) == double && type(args.big) == string`,
	`type(args.items[0].price) == int`,
	`args.limit == 7.5`,
	`args.big == '1e999'`,
	`args.huge == 1.0e20`,
	`args.items.all(i, i.price > 0)`,
	`args.items[0].price == 5`,
	`size(args) > 2 && 'limit' in args`,
	`has(args.missing)`,
	`args.missing == 1`,
	`args == {'limit': 1}`,
	`args.nested.a.b == true`,
	`args.nested == {'a': {'b': true}}`,
	`args.nothing == null`,
	`args.exists(k, k == 'limit')`,
	`args.sql.matches(r'(?i)\bdelete\b')`,
	`method == 'tools/call' && model == '' && path == '' && http_method == ''`,
}

func TestLazyActivationDecidesAsEagerConversion(t *testing.T) {
	var jsonArgs map[string]any
	dec := json.NewDecoder(strings.NewReader(`{"limit": 101, "sql": "DELETE FROM t", "big": 1e999,
	  "huge": 100000000000000000000, "items": [{"price": 5}, {"price": 0.5}], "nested": {"a": {"b": true}},
	  "nothing": null}`))
	dec.UseNumber()
	if err := dec.Decode(&jsonArgs); err != nil {
		t.Fatal(err)
	}
	src := agent("fraud", "tag:ops", "tag:x")
	reqs := []Request{
		callTool(src, tool("db"), "query", jsonArgs),
		callTool(src, src, "quarry", map[string]any{"limit": json.Number("7.5"), "items": []any{}}),
		callTool(agent("a"), tool("db"), "query", nil),
		{Src: src, Dst: tool("db"), Action: ActionResource, Method: "resources/read", Resource: "db://x/y"},
	}
	env, err := celEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range whenEquivalenceExprs {
		checked, iss := env.Compile(src)
		if iss.Err() != nil {
			t.Fatalf("%s: %v", src, iss.Err())
		}
		prg, err := env.Program(checked)
		if err != nil {
			t.Fatal(err)
		}
		for i := range reqs {
			r := &reqs[i]
			want, _, wantErr := prg.Eval(eagerActivation{r})
			got, _, gotErr := prg.Eval(&activation{r: *r})
			if fmt.Sprint(want, wantErr) != fmt.Sprint(got, gotErr) {
				t.Errorf("%s on request %d: lazy gives %v, %v; eager gives %v, %v", src, i, got, gotErr, want, wantErr)
			}
		}
	}
}

// costProbeExprs are expressions whose cost grows with their input in
// every way CEL charges for: regular expressions, substring search,
// concatenation, the string extensions, nested comprehensions.
var costProbeExprs = []string{
	`tool.name != 'query' || !args.sql.matches(r'(?i)\bdelete\b')`,
	`args.items.all(a, args.items.all(b, args.items.all(c, a + b + c != 'zzz')))`,
	`args.items.exists(i, i.contains(args.sql))`,
	`args.sql.split(' ').map(w, w.upperAscii()).join('-').replace('-', args.sql).size() > 3`,
	`args.items.filter(i, i.matches(args.sql)).size() < size(args)`,
	`src.tags.exists(t, t in dst.tags) || args.sql.lowerAscii().indexOf('x') > 0`,
	`args.sql + args.sql + resource.uri != prompt.name`,
}

// TestFastWhenProgramRunsOnlyWhereTheCostLimitCannotTrip checks the
// premise of whenProg.fast: for a request within fastMax, the tracked
// program's actual cost is within its static estimate and the limit, and
// the fast program decides alike; a request past fastMax runs under the
// tracker and, when hostile, is stopped by it.
func TestFastWhenProgramRunsOnlyWhereTheCostLimitCannotTrip(t *testing.T) {
	env, err := celEnv()
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range costProbeExprs {
		w, err := compileWhen(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if w.fast == nil {
			// Only the cubic comprehension is too dear for a fast
			// program: its fastMax is below minFastSize.
			if !strings.Contains(src, "all(c,") {
				t.Errorf("%s: no fast program", src)
			}
			continue
		}
		checked, _ := env.Compile(src)
		tracked, err := env.Program(checked, cel.EvalOptions(cel.OptTrackCost))
		if err != nil {
			t.Fatal(err)
		}
		est, err := env.EstimateCost(checked, sizeBound(w.fastMax))
		if err != nil {
			t.Fatal(err)
		}
		// Inputs at the bound: the largest strings and lists that are
		// within fastMax (capped so that the test stays quick).
		n := min(int(w.fastMax), 4096)
		for _, size := range []int{1, n / 2, n} {
			items := make([]any, size)
			for i := range items {
				items[i] = strings.Repeat("a", size)
			}
			r := callTool(agent(strings.Repeat("n", size), "tag:x"), tool("db", "tag:x"), "query",
				map[string]any{"sql": strings.Repeat("a ", size/2), "items": items})
			r.Resource, r.Prompt = strings.Repeat("r", size), strings.Repeat("p", size)
			if !w.vars.within(&r, w.fastMax) {
				t.Errorf("%s: size %d not within fastMax %d", src, size, w.fastMax)
				continue
			}
			out, det, err := tracked.Eval(&activation{r: r})
			if err != nil {
				t.Errorf("%s, size %d: tracked: %v", src, size, err)
				continue
			}
			cost := *det.ActualCost()
			if cost > est.Max || cost > whenCostLimit {
				t.Errorf("%s, size %d: actual cost %d, estimate %d, limit %d", src, size, cost, est.Max, whenCostLimit)
			}
			fastOut, _, err := w.fast.Eval(&activation{r: r})
			if err != nil || fastOut.Equal(out) != types.True {
				t.Errorf("%s, size %d: fast gives %v, %v; tracked %v", src, size, fastOut, err, out)
			}
		}
	}
}

func TestWhenCostLimitStopsHostileArgumentsPastTheFastBound(t *testing.T) {
	tests := []struct {
		name, when string
		args       func(n int) map[string]any
	}{
		{"quadratic comprehension", `args.items.all(a, args.items.all(b, a + b != 'zz'))`,
			func(n int) map[string]any {
				items := make([]any, n)
				for i := range items {
					items[i] = "x"
				}
				return map[string]any{"items": items}
			}},
		{"regex over a long argument", `!args.sql.matches(r'(?i)\bdelete\b')`,
			func(n int) map[string]any { return map[string]any{"sql": strings.Repeat("x", n)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": `+strconv.Quote(tt.when)+`}]}`)
			w := p.grants[0].when
			if w.fast == nil {
				t.Fatal("no fast program")
			}
			small := callTool(agent("a"), tool("b"), "t", tt.args(3))
			if !w.vars.within(&small, w.fastMax) {
				t.Fatalf("3 items not within fastMax %d", w.fastMax)
			}
			if d := p.Decide(small); !d.Allow {
				t.Errorf("small args: %+v, want allow", d)
			}
			// Past the bound (4*costMargin times it, where the actual cost,
			// not only the estimate, exceeds the limit): the tracked
			// program runs and stops it.
			t.Logf("fastMax %d", w.fastMax)
			hostile := callTool(agent("a"), tool("b"), "t", tt.args(int(w.fastMax)*4*costMargin))
			if w.vars.within(&hostile, w.fastMax) {
				t.Fatalf("hostile args within fastMax %d", w.fastMax)
			}
			if d := p.Decide(hostile); d.Allow || d.Reason != reason.WhenError {
				t.Errorf("hostile args: %+v, want when_error", d)
			}
		})
	}
}

// FuzzWhenPrograms checks, for arguments of any shape, the two premises of
// a when's evaluation: the lazy activation gives what the eager
// conversion gives, and where the fast program is used the tracked one
// counts no more than the static estimate and decides alike.
func FuzzWhenPrograms(f *testing.F) {
	env, err := celEnv()
	if err != nil {
		f.Fatal(err)
	}
	type compiled struct {
		w       *whenProg
		tracked cel.Program
		est     uint64
	}
	var progs []compiled
	for _, src := range append(append([]string{}, costProbeExprs...), whenEquivalenceExprs...) {
		w, err := compileWhen(src)
		if err != nil {
			f.Fatalf("%s: %v", src, err)
		}
		checked, _ := env.Compile(src)
		// The reference is built with the options compileWhen uses, so that
		// an error reads the same: without OptOptimize a regex over a
		// non-string says "no such overload: matches", with it only
		// "no such overload", and the audit records that text.
		tracked, err := env.Program(checked, cel.EvalOptions(cel.OptTrackCost, cel.OptOptimize), cel.CostLimit(whenCostLimit))
		if err != nil {
			f.Fatal(err)
		}
		est, err := env.EstimateCost(checked, sizeBound(w.fastMax))
		if err != nil {
			f.Fatal(err)
		}
		progs = append(progs, compiled{w, tracked, est.Max})
	}
	f.Add(uint8(0), "query", `{"sql": "DELETE from t"}`)
	f.Add(uint8(1), "t", `{"items": ["a", "b", "c"]}`)
	f.Add(uint8(3), "t", `{"sql": "a b c", "items": []}`)
	f.Add(uint8(30), "query", `{"limit": 1e999, "items": [{"price": 5}], "nested": {"a": {"b": true}}}`)
	f.Fuzz(func(t *testing.T, which uint8, toolName, args string) {
		c := progs[int(which)%len(progs)]
		var a map[string]any
		dec := json.NewDecoder(strings.NewReader(args))
		dec.UseNumber()
		if dec.Decode(&a) != nil {
			return
		}
		r := callTool(agent("a", "tag:x"), tool("db", "tag:x"), toolName, a)
		r.Resource, r.Prompt = "db://x/"+toolName, toolName
		want, det, wantErr := c.tracked.Eval(eagerActivation{&r})
		got, _, gotErr := c.tracked.Eval(&activation{r: r})
		if fmt.Sprint(want, wantErr) != fmt.Sprint(got, gotErr) {
			t.Fatalf("%s: lazy gives %v, %v; eager gives %v, %v", c.w.src, got, gotErr, want, wantErr)
		}
		if c.w.fast == nil || !c.w.vars.within(&r, c.w.fastMax) {
			return
		}
		// The premise the fast program rests on: the tracker could not
		// have stopped this evaluation. The estimate may be off by a few
		// steps (see costMargin), never by the margin's factor.
		cost := det.ActualCost()
		if cost == nil {
			t.Fatalf("%s: the tracked program counted no cost", c.w.src)
		}
		if *cost > whenCostLimit || *cost > costMargin*max(c.est, 1) {
			t.Fatalf("%s: within fastMax %d, tracked cost %d, estimate %d, limit %d", c.w.src, c.w.fastMax, *cost, c.est, whenCostLimit)
		}
		fast, _, fastErr := c.w.fast.Eval(&activation{r: r})
		if fmt.Sprint(want, wantErr) != fmt.Sprint(fast, fastErr) {
			t.Fatalf("%s: fast gives %v, %v; tracked %v, %v", c.w.src, fast, fastErr, want, wantErr)
		}
	})
}
