package cli

import (
	"strings"
	"testing"
)

// TestPrintTableEscapesEveryCell: a name or tag that carries terminal
// controls or a tab is shown escaped in its own column, and an empty cell
// as "-".
func TestPrintTableEscapesEveryCell(t *testing.T) {
	var b strings.Builder
	err := printTable(&b, "NAME\tTAGS\tOWNER", [][]string{
		{"evil\x1b]0;pwned\x07", "a\tb", ""},
		{"ok", "tag:x", "user:alice@example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\t") {
		t.Fatalf("a control character reached the terminal: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want the header and 2 rows: %q", len(lines), out)
	}
	for i, want := range [][]string{
		{"NAME", "TAGS", "OWNER"},
		{`evil\x1b]0;pwned\x07`, `a\x09b`, "-"},
		{"ok", "tag:x", "user:alice@example.com"},
	} {
		if got := strings.Fields(lines[i]); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("line %d = %q, want columns %q", i, lines[i], want)
		}
	}
}
