package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
)

const auditArgsDoc = `{
  "grants": [
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["transfer"],
     "when": "args.amount <= 1000 && has(args.opts.mode) && args.opts.mode == 'safe' && 'memo' in args"},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["batch"], "when": "args.items.all(i, i.price < 10) && args['a b'] == 1"},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["login"], "when": "args.api_token != '' && args.user == 'x'"},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["count"], "when": "size(args) < 3"},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["other"], "when": "src.name == 'teller'"},
  ],
}`

func TestAuditArgPathsAreWhatWhensReadMinusSecrets(t *testing.T) {
	p := mustCompile(t, auditArgsDoc)
	got := p.AuditArgPaths()
	want := []string{"a b", "amount", "items", "memo", "opts.mode", "user"}
	if !slices.Equal(got, want) {
		t.Fatalf("AuditArgPaths = %q, want %q (api_token is a secret, size(args) reads no path)", got, want)
	}
	if (*Policy)(nil).AuditArgPaths() != nil {
		t.Fatal("a nil policy keeps paths")
	}
}

func TestKeepArgsKeepsOnlyReadPathsAndCaseVariants(t *testing.T) {
	args := map[string]any{
		"amount": json.Number("12"), "memo": "hi", "password": "hunter2",
		"opts":  map[string]any{"mode": "safe", "other": "x"},
		"Items": []any{"a"}, "unread": "y",
	}
	paths := []string{"amount", "items", "memo", "opts.mode"}
	got, kept, ok := KeepArgs(paths, args, 4096)
	if !ok || !slices.Equal(kept, paths) {
		t.Fatal("over limit")
	}
	const want = `{"Items":null,"amount":12,"memo":"hi","opts":{"mode":"safe"}}`
	if got != want {
		t.Fatalf("KeepArgs = %s, want %s", got, want)
	}
	if _, _, ok := KeepArgs(paths, map[string]any{"memo": strings.Repeat("x", 100)}, 50); ok {
		t.Fatal("KeepArgs kept more than its limit")
	}
	if s, _, ok := KeepArgs(nil, args, 10); s != "" || !ok {
		t.Fatal("KeepArgs kept something with no paths")
	}
}

func TestDecideRecordedMatchesDecideOnKeptArgs(t *testing.T) {
	p := mustCompile(t, auditArgsDoc)
	kept := ParseKeptArgs(p.AuditArgPaths())
	teller, ledger := agent("teller"), tool("ledger")
	for _, tc := range []struct {
		tool    string
		args    string
		judged  bool
		outcome reason.Code
	}{
		{"transfer", `{"amount":10,"opts":{"mode":"safe","x":1},"memo":"m","junk":"zzz"}`, true, reason.Allowed},
		{"transfer", `{"amount":1e4,"opts":{"mode":"safe"},"memo":"m"}`, true, reason.WhenFalse},
		{"transfer", `{"amount":10,"opts":{"mode":"safe"}}`, true, reason.WhenFalse},
		{"transfer", `{"Amount":10,"opts":{"mode":"safe"},"memo":"m"}`, true, reason.CaseVariantKey},
		{"transfer", `{"amount":"x","opts":{"mode":"safe"},"memo":"m"}`, true, reason.WhenError},
		{"batch", `{"items":[{"price":1},{"price":2}],"a b":1}`, true, reason.Allowed},
		{"batch", `{"items":[{"price":11}],"a b":1}`, true, reason.WhenFalse},
		{"login", `{"api_token":"s3cret","user":"x"}`, false, ""},
		{"count", `{"a":1}`, false, ""},
		{"other", `{"a":1}`, true, reason.Allowed}, // grant 4 needs no argument
	} {
		var args map[string]any
		dec := json.NewDecoder(strings.NewReader(tc.args))
		dec.UseNumber()
		if err := dec.Decode(&args); err != nil {
			t.Fatal(err)
		}
		live := p.Decide(callTool(teller, ledger, tc.tool, args))
		s, _, ok := KeepArgs(p.AuditArgPaths(), args, 4096)
		if !ok {
			t.Fatal("over limit")
		}
		var back map[string]any
		dec = json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&back); err != nil {
			t.Fatal(err)
		}
		again, judged := p.DecideRecorded(callTool(teller, ledger, tc.tool, back), kept)
		if judged != tc.judged {
			t.Fatalf("%s %s: judged %v, want %v", tc.tool, tc.args, judged, tc.judged)
		}
		if !judged {
			continue
		}
		if live.Reason != tc.outcome || again.Reason != live.Reason || again.Grant != live.Grant || again.Allow != live.Allow {
			t.Fatalf("%s %s: live %+v, replayed from %s %+v, want %s", tc.tool, tc.args, live, s, again, tc.outcome)
		}
	}
	// A record that kept no paths cannot judge a when reading one.
	if _, judged := p.DecideRecorded(callTool(teller, ledger, "transfer", nil), nil); judged {
		t.Fatal("judged a when without its arguments")
	}
}

func TestKeepArgsWithholdsAWholeValueHoldingASecret(t *testing.T) {
	args := map[string]any{"items": []any{map[string]any{"price": 1, "Api_Key": "k"}}, "memo": "m"}
	got, kept, ok := KeepArgs([]string{"items", "memo"}, args, 4096)
	if !ok || got != `{"memo":"m"}` || !slices.Equal(kept, []string{"memo"}) {
		t.Fatalf("KeepArgs = %s %q %v", got, kept, ok)
	}
}

func TestAuditArgsSectionAdjustsWhatIsKept(t *testing.T) {
	const grants = `"grants": [{"src": ["*"], "dst": ["tool:t"], "tools": ["*"], "when": "args.customer.ssn != '' && args.customer.name != '' && args.notes != '' && args.n > 1"}]`
	for _, tc := range []struct {
		section string
		want    []string
	}{
		{``, []string{"customer.name", "customer.ssn", "n", "notes"}},
		{`"audit_args": {"keep": "when", "omit": ["customer.ssn", "notes"]},`, []string{"customer.name", "n"}},
		{`"audit_args": {"omit": ["customer"]},`, []string{"n", "notes"}},
		{`"audit_args": {"keep": "none"},`, nil},
	} {
		p := mustCompile(t, "{"+tc.section+grants+"}")
		if got := p.AuditArgPaths(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: AuditArgPaths = %q, want %q", tc.section, got, tc.want)
		}
		// A gateway's projection keeps what the whole document keeps.
		pr, err := p.Project(tool("t"))
		if err != nil {
			t.Fatal(err)
		}
		pp, err := CompileProjection(pr, "p")
		if err != nil {
			t.Fatal(err)
		}
		if got := pp.AuditArgPaths(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: projection keeps %q, want %q", tc.section, got, tc.want)
		}
	}
	for _, bad := range []string{`"audit_args": {"keep": "all"},`, `"audit_args": {"omit": ["a..b"]},`, `"audit_args": {"other": 1},`} {
		if _, err := Compile([]byte("{"+bad+grants+"}"), "x"); err == nil {
			t.Errorf("%s compiled", bad)
		}
	}
}

const replayFuzzDoc = `{
  "grants": [
    {"src": ["*"], "dst": ["tool:t"], "tools": ["a"], "when": "has(args.opts.mode) && args.opts.mode == 'x' || args.n > 3"},
    {"src": ["*"], "dst": ["tool:t"], "tools": ["a", "b"], "when": "'flag' in args && args.items.exists(i, i == 2)"},
    {"src": ["*"], "dst": ["tool:t"], "tools": ["b", "c"], "when": "args['k'].size() < 4 && !(args.opts.level in [1, 2])"},
    {"src": ["*"], "dst": ["tool:t"], "tools": ["c"], "when": "args.secret_token == 'x'"},
    {"src": ["*"], "dst": ["tool:t"], "tools": ["d"], "when": "size(args) == 2"},
  ],
}`

// FuzzDecideRecordedAgreesWithDecide: whatever the arguments, a decision
// made again from what the trail keeps (KeepArgs, DecideRecorded) is the
// decision made live, or is reported as not judged; never another one.
func FuzzDecideRecordedAgreesWithDecide(f *testing.F) {
	for _, s := range []string{
		`{"opts":{"mode":"x","level":3},"n":1,"k":"ab"}`, `{"n":4}`, `{"flag":1,"items":[1,2]}`, `{"Opts":{"mode":"x"}}`,
		`{"opts":{"Mode":"x"}}`, `{"k":"abcdef","opts":{"level":2}}`, `{"secret_token":"x"}`, `{"a":1,"b":2}`,
		`{"opts":"str","n":"4"}`, `{"items":[{"x":1}],"flag":null}`, `{"opts":{"mode":"x","api_key":"k"},"k":[1]}`,
	} {
		for _, tool := range []string{"a", "b", "c", "d"} {
			f.Add(s, tool)
		}
	}
	p := mustCompile(f, replayFuzzDoc)
	src, dst := agent("x"), tool("t")
	f.Fuzz(func(t *testing.T, js, toolName string) {
		var args map[string]any
		dec := json.NewDecoder(strings.NewReader(js))
		dec.UseNumber()
		if dec.Decode(&args) != nil || dec.More() {
			t.Skip()
		}
		live := p.Decide(callTool(src, dst, toolName, args))
		text, kept, ok := KeepArgs(p.AuditArgPaths(), args, 1<<20)
		if !ok {
			t.Skip()
		}
		var back map[string]any
		if text != "" {
			dec = json.NewDecoder(strings.NewReader(text))
			dec.UseNumber()
			if err := dec.Decode(&back); err != nil {
				t.Fatalf("kept %s does not decode: %v", text, err)
			}
		}
		again, judged := p.DecideRecorded(callTool(src, dst, toolName, back), ParseKeptArgs(kept))
		if !judged {
			return
		}
		if again.Allow != live.Allow || again.Reason != live.Reason || again.Grant != live.Grant || again.When != live.When {
			t.Fatalf("args %s, tool %q: live %+v, replayed from %s (paths %q) %+v", js, toolName, live, text, kept, again)
		}
	})
}

func TestSecretKeysAreWholeWords(t *testing.T) {
	for _, k := range []string{"password", "db_password", "accessToken", "client_secret", "X-Api-Key", "api_key", "apiKey", "Authorization", "privateKey", "credentials", "session-cookie"} {
		if !secretKey(k) {
			t.Errorf("%q is not taken for a secret", k)
		}
	}
	for _, k := range []string{"max_tokens", "tokens", "amount", "author", "keyboard", "api", "key", "secretary"} {
		if secretKey(k) {
			t.Errorf("%q is taken for a secret", k)
		}
	}
}
