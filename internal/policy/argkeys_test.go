package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// paths lists what k reads as sorted dotted paths; "*" is a computed key.
func (k *ArgKeys) paths() []string {
	var out []string
	var walk func(n *keyNode, prefix string)
	walk = func(n *keyNode, prefix string) {
		for f, c := range n.fields {
			out = append(out, prefix+f)
			walk(c, prefix+f+".")
		}
		if n.any != nil {
			out = append(out, prefix+"*")
			walk(n.any, prefix+"*.")
		}
	}
	if k != nil && k.root != nil {
		walk(k.root, "")
	}
	slices.Sort(out)
	return out
}

func TestArgKeysOfWhenExpressions(t *testing.T) {
	tests := []struct {
		when string
		want []string
	}{
		{"!has(args.max_tokens) || args.max_tokens <= 4096", []string{"max_tokens"}},
		{"args.opts.mode == 'safe' && has(args.opts.dry)", []string{"opts", "opts.dry", "opts.mode"}},
		{"args['x-y'] == 1", []string{"x-y"}},
		{"'dry_run' in args", []string{"dry_run"}},
		{"args.items[0].price < 10", []string{"items", "items.price"}},
		{"args.items.all(i, i.price < 10 && i.tags.exists(t, t.name == 'x'))", []string{"items", "items.price", "items.tags", "items.tags.name"}},
		{"args.items.filter(i, i.ok == true)[0].price > 1", []string{"items", "items.ok", "items.price"}},
		{"args.m.exists(k, args.m[k].v > 0)", []string{"m", "m.*", "m.*.v"}},
		{"(args.a > 0 ? args.b : args.c).d == 1", []string{"a", "b", "b.d", "c", "c.d"}},
		{"[args.a, args.b].all(x, x.c == 1)", []string{"a", "a.c", "b", "b.c"}},
		{"[{'x': 1}].all(args, args.x == 1) && args.y == 2", []string{"y"}}, // a variable named args shadows
		{"tool.name == 'q' && method == 'tools/call'", nil},
		{"src.name == 'a' && dst.tags.exists(t, t == 'tag:x')", nil},
	}
	for _, tt := range tests {
		w, err := compileWhen(tt.when)
		if err != nil {
			t.Fatalf("%s: %v", tt.when, err)
		}
		if got := w.keys.paths(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: reads %v, want %v", tt.when, got, tt.want)
		}
	}
}

func jsonArgs(t *testing.T, s string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecideRefusesArgumentKeysThatDifferOnlyInCase(t *testing.T) {
	p := mustCompile(t, `{"grants": [
  {"src": ["agent:a"], "dst": ["model:llm"], "models": ["*"], "when": "!has(args.max_tokens) || args.max_tokens <= 4096"},
  {"src": ["agent:a"], "dst": ["tool:db"], "tools": ["query"],
   "when": "!args.sql.matches(r'(?i)\\bdrop\\b') && (!has(args.opts) || args.opts.mode == 'read') && args.items.all(i, i.price < 10) && !('force' in args)"},
]}`)
	modelReq := func(body string) Decision {
		return p.Decide(Request{Src: agent("a"), Dst: model("llm"), Action: ActionModel, Method: "/v1/chat/completions", Model: "m", Args: jsonArgs(t, body)})
	}
	queryReq := func(args string) Decision {
		return p.Decide(callTool(agent("a"), tool("db"), "query", jsonArgs(t, args)))
	}
	tests := []struct {
		name string
		d    Decision
		want reason.Code
	}{
		{"model: within limit", modelReq(`{"model":"m","max_tokens":100}`), reason.Allowed},
		{"model: over limit", modelReq(`{"model":"m","max_tokens":100000}`), reason.WhenFalse},
		{"model: capitalised", modelReq(`{"model":"m","Max_Tokens":100000}`), reason.CaseVariantKey},
		{"model: upper case", modelReq(`{"model":"m","MAX_TOKENS":100000}`), reason.CaseVariantKey},
		{"model: other keys in other case pass", modelReq(`{"model":"m","Temperature":1,"tools":[{"parameters":{"Max_Tokens":{}}}]}`), reason.Allowed},
		{"tool: plain", queryReq(`{"sql":"select 1","items":[{"price":1,"Name":"x"}]}`), reason.Allowed},
		{"tool: capitalised sql", queryReq(`{"SQL":"drop table t","items":[]}`), reason.CaseVariantKey},
		{"tool: long s in sql", queryReq(`{"sql":"select 1","\u017fql":"drop table t","items":[]}`), reason.CaseVariantKey},
		{"tool: nested opts.Mode", queryReq(`{"sql":"select 1","opts":{"Mode":"write"},"items":[]}`), reason.CaseVariantKey},
		{"tool: Opts", queryReq(`{"sql":"select 1","Opts":{"mode":"write"},"items":[]}`), reason.CaseVariantKey},
		{"tool: element Price", queryReq(`{"sql":"select 1","items":[{"price":1},{"Price":100}]}`), reason.CaseVariantKey},
		{"tool: Kelvin sign", queryReq(`{"sql":"select 1","items":[],"\u212aeep":1}`), reason.Allowed},
		{"tool: Force", queryReq(`{"sql":"select 1","items":[],"Force":true}`), reason.CaseVariantKey},
		{"tool: force", queryReq(`{"sql":"select 1","items":[],"force":true}`), reason.WhenFalse},
	}
	for _, tt := range tests {
		if tt.d.Reason != tt.want || tt.d.Allow != (tt.want == reason.Allowed) {
			t.Errorf("%s: %s, want %s", tt.name, tt.d.Explain(), tt.want)
		}
	}
}

func TestArgKeysFindFollowsPathsAndFoldsUnicode(t *testing.T) {
	k := NewArgKeys("model", "stream", "stream_options.include_usage", "kind")
	tests := []struct {
		body string
		bad  string
	}{
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, ""},
		{`{"Model":"m"}`, "Model"},
		{`{"model":"m","Stream":true}`, "Stream"},
		{`{"model":"m","stream_options":{"Include_Usage":false}}`, "Include_Usage"},
		{`{"model":"m","STREAM_OPTIONS":{}}`, "STREAM_OPTIONS"},
		{`{"\u212aind":"x"}`, "\u212aind"},
		{`{"messages":[{"Model":"x","Stream":1}]}`, ""},
	}
	for _, tt := range tests {
		bad, found := k.Find(jsonArgs(t, tt.body))
		if bad != tt.bad || found != (tt.bad != "") {
			t.Errorf("%s: Find = %q, %v; want %q", tt.body, bad, found, tt.bad)
		}
	}
	var nilKeys *ArgKeys
	if _, found := nilKeys.Find(map[string]any{"X": 1}); found {
		t.Error("a nil ArgKeys refused a key")
	}
}
