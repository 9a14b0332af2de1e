package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exampleLine finds an agentmesh command line in help text or a comment.
// It starts a line, follows "(" or a colon (not prose: "an agentmesh
// policy"), and ends before a ")", pipe or redirection.
var exampleLine = regexp.MustCompile(`(?:^|\(|:\s+)agentmesh ([a-z][^)|>]*)`)

// examplesIn returns the agentmesh command lines in text, with lines that
// end in a backslash joined to the next (comment markers dropped).
func examplesIn(text string) [][]string {
	var out [][]string
	joined := ""
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "//"))
		if joined != "" {
			l = joined + " " + l
			joined = ""
		}
		if s, ok := strings.CutSuffix(l, `\`); ok {
			joined = s
			continue
		}
		if m := exampleLine.FindStringSubmatch(l); m != nil {
			out = append(out, shellWords(m[1]))
		}
	}
	return out
}

// TestHelpAndExampleCommandsParse runs every example of the admin and
// offline commands (keys, nodes, policy, audit, status) that help texts and
// the example policies show, with a state directory that does not exist:
// each may fail to reach a coordinator (status 1), but none may be a usage
// error (status 2), as 'nodes tag NAME tag:X' in a policy comment was.
// Commands that start servers (coordinator, serve, connect, join, bench,
// demo) are not run here; the README quickstart's test runs theirs.
func TestHelpAndExampleCommandsParse(t *testing.T) {
	texts := map[string]string{}
	for _, c := range sortedCommands() {
		texts["agentmesh "+c.name+" --help"] = c.long
		for _, s := range c.subs {
			texts["agentmesh "+s.path(c)+" --help"] = s.long
		}
	}
	files, _ := filepath.Glob("../../examples/*.hujson")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts[f] = string(b)
	}
	env := map[string]string{"AGENTMESH_STATE": filepath.Join(t.TempDir(), "no-such-state")}
	ran := 0
	for where, text := range texts {
		for _, args := range examplesIn(text) {
			if c := commands[args[0]]; c == nil || c.subs == nil && args[0] != "status" {
				continue
			}
			ran++
			if code, _, errOut := run(t, env, args...); code == 2 {
				t.Errorf("%s shows 'agentmesh %s', which is a usage error: %s", where, strings.Join(args, " "), errOut)
			}
		}
	}
	if ran < 10 {
		t.Errorf("found %d examples to run; the extraction is broken", ran)
	}
}

// shellWords splits a command line as a shell would for the examples we
// write: at spaces, with '...' quoting.
func shellWords(line string) []string {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}
