package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func mustCompile(t testing.TB, doc string) *Policy {
	t.Helper()
	p, err := Compile([]byte(doc), "test")
	if err != nil {
		t.Fatalf("Compile: %v\ndocument:\n%s", err, doc)
	}
	return p
}

func TestCompileRejectsBadDocumentsWithPosition(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		kind error
		want string // substring of the error, including line:col
	}{
		{"invalid hujson", "{\n  \"grants\": [\n}", ErrSyntax, "3:1:"},
		{"not an object", `[]`, ErrInvalid, "1:1: (top level): want an object"},
		{"unknown top-level key", "{\n  \"acls\": []\n}", ErrInvalid, `2:3: (top level): unknown key "acls"`},
		{"unknown grant key", "{\"grants\": [\n {\"src\": [\"*\"], \"dst\": [\"*\"],\n  \"tool\": [\"x\"]}]}", ErrInvalid, `3:3: grants[0]: unknown key "tool"`},
		{"unknown test key", `{"tests": [{"src": "agent:a", "dst": "tool:b", "allow": ["connect"], "expect": 1}]}`, ErrInvalid, `1:70: tests[0]: unknown key "expect"`},
		{"duplicate key", `{"grants": [], "grants": []}`, ErrInvalid, `1:16: grants: duplicate key "grants"`},
		{"missing src", `{"grants": [{"dst": ["*"]}]}`, ErrInvalid, `1:13: grants[0]: missing "src"`},
		{"empty dst", "{\"grants\": [{\"src\": [\"agent:a\"],\n \"dst\": []}]}", ErrInvalid, `2:9: grants[0].dst: must list at least one selector`},
		{"src not a list", `{"grants": [{"src": "agent:a", "dst": ["*"]}]}`, ErrInvalid, `1:21: grants[0].src: want an array, got a string`},
		{"number in list", `{"grants": [{"src": [1], "dst": ["*"]}]}`, ErrInvalid, `1:22: grants[0].src[0]: want a string, got a number`},
		{"unknown selector kind", `{"grants": [{"src": ["admin:root"], "dst": ["*"]}]}`, ErrInvalid, `1:22: grants[0].src[0]: selector "admin:root": unknown kind "admin"`},
		{"selector without kind", `{"grants": [{"src": ["fraud"], "dst": ["*"]}]}`, ErrInvalid, `selector "fraud": want agent:NAME`},
		{"bad node name", `{"grants": [{"src": ["agent:Fraud"], "dst": ["*"]}]}`, ErrInvalid, `1:22: grants[0].src[0]: selector "agent:Fraud"`},
		{"bad tag", `{"grants": [{"src": ["tag:"], "dst": ["*"]}]}`, ErrInvalid, `selector "tag:"`},
		{"empty user login", `{"grants": [{"src": ["user:"], "dst": ["*"]}]}`, ErrInvalid, `1:22: grants[0].src[0]: selector "user:": want user:LOGIN`},
		{"user login with space", `{"grants": [{"src": ["user:a b"], "dst": ["*"]}]}`, ErrInvalid, `selector "user:a b": want user:LOGIN`},
		{"undefined group", `{"grants": [{"src": ["group:nobody"], "dst": ["*"]}]}`, ErrInvalid, `1:22: grants[0].src[0]: undefined group "group:nobody"`},
		{"bad group name", `{"groups": {"fraud": ["agent:a"]}}`, ErrInvalid, `1:13: groups: group name "fraud"`},
		{"star in group", `{"groups": {"group:all": ["*"]}}`, ErrInvalid, `1:27: groups.group:all[0]: "*" cannot be a group member`},
		{"cyclic groups", "{\"groups\": {\n \"group:a\": [\"group:b\"],\n \"group:b\": [\"group:a\"]}}", ErrInvalid, `2:2: groups.group:a: group "group:a" is part of a cycle`},
		{"self-referencing group", `{"groups": {"group:a": ["agent:x", "group:a"]}}`, ErrInvalid, `group "group:a" is part of a cycle`},
		{"empty glob", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["ok", ""]}]}`, ErrInvalid, `1:58: grants[0].tools[1]: glob "": empty entry`},
		{"bare bang", `{"grants": [{"src": ["*"], "dst": ["*"], "resources": ["!"]}]}`, ErrInvalid, `grants[0].resources[0]: glob "!"`},
		{"only exclusions", `{"grants": [{"src": ["*"], "dst": ["*"], "models": ["!gpt-*"]}]}`, ErrInvalid, `1:52: grants[0].models: a list of only '!' entries`},
		{"when syntax error", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": "tool.name =="}]}`, ErrInvalid, `1:66: grants[0].when: when: ERROR`},
		{"when wrong type", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": "tool.name"}]}`, ErrInvalid, `grants[0].when: when: expression has type string, want bool`},
		{"when dyn type", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": "args.dry_run"}]}`, ErrInvalid, `want bool`},
		{"when unknown variable", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": "user == 'x'"}]}`, ErrInvalid, `undeclared reference to 'user'`},
		{"when empty", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": " "}]}`, ErrInvalid, `when: empty expression`},
		{"when backspace regex", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": "!args.sql.matches('(?i)\\bdelete\\b')"}]}`, ErrInvalid, `backspace`},
		{"when too long", `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "when": "` + strings.Repeat("true && ", 600) + `true"}]}`, ErrInvalid, `more than 4096`},
		{"test without expectations", `{"tests": [{"src": "agent:a", "dst": "tool:b"}]}`, ErrInvalid, `1:12: tests[0]: a test needs at least one "allow" or "deny"`},
		{"test names a tag", `{"tests": [{"src": "tag:a", "dst": "tool:b", "allow": ["connect"]}]}`, ErrInvalid, `1:20: tests[0].src: "tag:a": a test names one node`},
		{"test bad expectation", `{"tests": [{"src": "agent:a", "dst": "tool:b", "allow": ["tools/list"]}]}`, ErrInvalid, `1:58: tests[0].allow[0]: expectation "tools/list"`},
		{"test args not object", `{"tests": [{"src": "agent:a", "dst": "tool:b", "args": [], "allow": ["connect"]}]}`, ErrInvalid, `tests[0].args: want an object`},
		{"invalid utf-8", "{\"grants\": [\xff]}", ErrSyntax, "1:13:"},
		{"too deep", strings.Repeat("[", MaxDepth+1), ErrInvalid, fmt.Sprintf("1:%d: nested more than", MaxDepth+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile([]byte(tt.doc), "v")
			if err == nil {
				t.Fatalf("Compile succeeded (%s), want error containing %q", p.Summary(), tt.want)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q does not wrap %v", err, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestCompileEnforcesSizeLimits(t *testing.T) {
	big := make([]byte, MaxDocumentBytes+1)
	for i := range big {
		big[i] = ' '
	}
	copy(big, "{}")
	if _, err := Compile(big, "v"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("oversized document: err = %v, want ErrInvalid naming the limit", err)
	}

	var b strings.Builder
	b.WriteString(`{"grants": [`)
	for i := 0; i <= MaxGrants; i++ {
		b.WriteString(`{"src":["*"],"dst":["*"]},`)
	}
	b.WriteString("]}")
	if b.Len() > MaxDocumentBytes {
		t.Fatalf("test document is %d bytes; cannot reach the grant limit under the size limit", b.Len())
	}
	if _, err := Compile([]byte(b.String()), "v"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("more than %d grants", MaxGrants)) {
		t.Errorf("too many grants: err = %v", err)
	}
}

func TestCompileReportsSeveralErrors(t *testing.T) {
	doc := `{"grants": [
  {"src": ["bogus:a"], "dst": ["*"]},
  {"src": ["*"], "dst": ["*"], "tools": [""]},
]}`
	_, err := Compile([]byte(doc), "v")
	if err == nil {
		t.Fatal("Compile succeeded")
	}
	for _, want := range []string{"2:12:", "3:42:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestCompileAcceptsCommentsTrailingCommasAndEmptyDocument(t *testing.T) {
	for _, doc := range []string{
		`{}`,
		"// nothing yet\n{ /* empty */ }",
		`{"groups": {}, "grants": [], "tests": [],}`,
		`{"grants": [{"src": ["*"], "dst": ["*"],},],}`,
	} {
		p := mustCompile(t, doc)
		if p.Version() != "test" || string(p.Document()) != doc {
			t.Errorf("Version %q Document %q", p.Version(), p.Document())
		}
	}
}

func TestCompileRunsTestsAndNamesTheFailure(t *testing.T) {
	doc := `{
  "grants": [
    {"src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["balance"]},
    {"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["*"], "when": "tool.name != 'transfer' || args.amount < 1000"},
  ],
  "tests": [
    {"src": "agent:auditor", "dst": "tool:ledger", "allow": ["tools/call balance"], "deny": ["tools/call transfer"]},
    {"src": "agent:auditor", "dst": "tool:ledger",
     "allow": ["tools/call transfer"]},
    {"src": "agent:teller", "dst": "tool:ledger", "args": {"amount": 5000},
     "allow": ["tools/call transfer"]},
    {"src": "agent:teller", "dst": "tool:vault",
     "deny": ["connect"], "allow": ["connect"]},
  ],
}`
	_, err := Compile([]byte(doc), "v")
	if !errors.Is(err, ErrTestFailed) {
		t.Fatalf("err = %v, want ErrTestFailed", err)
	}
	for _, want := range []string{
		`9:16: tests[1].allow[0]: test 1 (agent:auditor -> tool:ledger): expected allow "tools/call transfer", got deny: not_granted`,
		`11:16: tests[2].allow[0]: test 2 (agent:teller -> tool:ledger): expected allow "tools/call transfer", got deny: when_false by grants[1] at 4:5 (when false)`,
		`test 3 (agent:teller -> tool:vault): expected allow "connect", got deny: no_grant`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%s\ndoes not contain\n%s", err, want)
		}
	}
	if strings.Contains(err.Error(), "test 0") {
		t.Errorf("passing test 0 reported as failing: %v", err)
	}
}

func TestCompileTestsUseTagsAndGroupMembershipByName(t *testing.T) {
	mustCompile(t, `{
  "groups": {"group:fraud": ["agent:fraud-detector", "tag:fraud"], "group:all-fraud": ["group:fraud"]},
  "grants": [{"src": ["group:all-fraud"], "dst": ["tag:payments"], "tools": ["query"]}],
  "tests": [
    {"src": "agent:fraud-detector", "dst": "tool:db", "dst_tags": ["tag:payments"], "allow": ["tools/call query"]},
    {"src": "agent:x", "src_tags": ["tag:fraud"], "dst": "tool:db", "dst_tags": ["tag:payments"], "allow": ["tools/call query"]},
    {"src": "agent:x", "dst": "tool:db", "dst_tags": ["tag:payments"], "deny": ["connect"]},
    {"src": "agent:fraud-detector", "dst": "tool:db", "deny": ["connect"]},
  ],
}`)
}

func TestSummaryAndAccessorsOnNilPolicy(t *testing.T) {
	var p *Policy
	if p.Version() != "" || p.Document() != nil || p.Summary() != "no policy" {
		t.Errorf("nil policy: Version %q Document %q Summary %q", p.Version(), p.Document(), p.Summary())
	}
	got := mustCompile(t, `{"groups": {"group:a": ["agent:a"]}, "grants": [{"src": ["group:a"], "dst": ["*"]}],
	  "tests": [{"src": "agent:a", "dst": "tool:t", "allow": ["connect"]}]}`).Summary()
	if got != "1 grants, 1 groups, 1 tests passed" {
		t.Errorf("Summary = %q", got)
	}
}
