package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

func lintLines(ws []Warning) []string {
	out := []string{}
	for _, w := range ws {
		out = append(out, w.String())
	}
	return out
}

func TestLintShadowedGrants(t *testing.T) {
	doc := `{
  "groups": {"group:ops": ["agent:a", "agent:b"], "group:oncall": ["admin:alice"]},
  "grants": [
    {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["read_*"]},
    {"src": ["agent:b"], "dst": ["tool:t"], "tools": ["*"]},
    {"src": ["group:ops"], "dst": ["tool:t"], "tools": ["read_file"], "approval": "group:oncall"},
    {"src": ["group:ops"], "dst": ["tool:t"]},
    {"src": ["agent:c"], "dst": ["tool:t"], "tools": ["*"], "when": "args.x == 1"},
    {"src": ["agent:c"], "dst": ["tool:t"], "tools": ["read_*"]},
    {"src": ["*"], "dst": ["tool:u"], "tools": ["list_*", "!list_secret"]},
    {"src": ["agent:a"], "dst": ["tool:u"], "tools": ["list_a?c", "!list_secret"]},
    {"src": ["agent:a"], "dst": ["tool:u"], "tools": ["list_b"]},
    {"src": ["agent:a"], "dst": ["tool:u"], "resources": ["file:///x"]},
  ],
}`
	p := compileOK(t, doc)
	var got []string
	for _, w := range p.Lint(nil) {
		if w.Code == LintShadowed {
			got = append(got, w.Path+": "+w.Msg)
		}
	}
	want := []string{
		// a's read_file is read_* of grant 0, b's is * of grant 1: the
		// approval never holds anything.
		"grants[2]: shadowed: earlier grants (0, 1) allow everything it allows, so it never decides; its when and approval never apply",
		"grants[3]: shadowed: earlier grants (0, 1) allow everything it allows, so it never decides",
		// grants[5] is not shadowed by grants[4], whose when may be false.
		"grants[7]: shadowed: earlier grants (6) allow everything it allows, so it never decides",
		// grants[8] is not: grants[6] excludes what grants[8] does not.
	}
	if !slices.Equal(got, want) {
		t.Errorf("shadowed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Every shadowed grant really never decides, for the tools named.
	for _, c := range []struct {
		src, dst, tool string
	}{{"a", "t", "read_file"}, {"b", "t", "read_file"}, {"a", "u", "list_abc"}} {
		d := p.Decide(Request{Src: Node{Kind: identity.KindAgent, Name: identity.Name(c.src)}, Dst: Node{Kind: identity.KindTool, Name: identity.Name(c.dst)},
			Action: ActionTool, Method: "tools/call", Tool: c.tool})
		if !d.Allow || d.Grant == 2 || d.Grant == 7 {
			t.Errorf("%+v decided by grant %d (%s)", c, d.Grant, d.Explain())
		}
	}
}

func TestLintExclusionsThatExcludeNothing(t *testing.T) {
	doc := `{
  "grants": [
    {"src": ["*"], "dst": ["tool:t"], "tools": ["read_*", "!write_x", "!read_secret", "!*_admin"]},
    {"src": ["*"], "dst": ["tool:t"], "resources": ["file:///data/*", "!file:///etc/*", "!file:///DATA/secret"]},
    {"src": ["*"], "dst": ["tool:t"], "prompts": ["a*z", "!*y"]},
  ],
}`
	p := compileOK(t, doc)
	got := lintLines(p.Lint(nil))
	want := []string{
		`3:59: grants[0].tools[1]: "!write_x" excludes nothing: no include of this list matches anything it matches (empty_exclusion)`,
		`4:71: grants[1].resources[1]: "!file:///etc/*" excludes nothing: no include of this list matches anything it matches (empty_exclusion)`,
		`5:58: grants[2].prompts[1]: "!*y" excludes nothing: no include of this list matches anything it matches (empty_exclusion)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("lint:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLintNeverMatchesAndUnpinnedTools(t *testing.T) {
	doc := `{
  "grants": [
    {"src": ["agent:ghost", "tag:nobody"], "dst": ["tool:files"], "tools": ["read_file", "list_*", "wrte_file"]},
    {"src": ["agent:reader"], "dst": ["tool:files", "tag:prod"], "tools": ["wrte_file"]},
    {"src": ["*"], "dst": ["tool:nowhere"]},
  ],
  "tool_pins": {
    "tool:files": {"pin": "enforce", "tools": {
      "read_file": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
      "list_dir": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}},
  },
}`
	p := compileOK(t, doc)
	// Offline: only the pin check (grant 1 reaches tag:prod too, whose
	// servers may have other tools).
	want := []string{`3:100: grants[0].tools[2]: "wrte_file" matches no tool pinned in tool_pins for this grant's dst (no_pinned_tool)`}
	if got := lintLines(p.Lint(nil)); !slices.Equal(got, want) {
		t.Errorf("offline lint:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	nodes := []Node{{Kind: identity.KindAgent, Name: "reader"}, {Kind: identity.KindTool, Name: "files"}}
	want = []string{
		`3:13: grants[0].src: can never match: no registered node matches any of its src selectors (never_matches)`,
		want[0],
		`5:27: grants[2].dst: can never match: no registered node matches any of its dst selectors (never_matches)`,
	}
	if got := lintLines(p.Lint(nodes)); !slices.Equal(got, want) {
		t.Errorf("lint with registry:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLintCleanPolicyHasNoWarnings(t *testing.T) {
	p := compileOK(t, whoDoc)
	if got := p.Lint(whoNodes()); len(got) != 0 {
		t.Errorf("lint of whoDoc: %v", lintLines(got))
	}
}
