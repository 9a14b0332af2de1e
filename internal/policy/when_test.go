package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

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
