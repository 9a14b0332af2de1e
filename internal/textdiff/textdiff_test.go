package textdiff

import (
	"strings"
	"testing"
)

func TestLinesNamesRemovedAndAddedLinesWithTheirNumbers(t *testing.T) {
	for _, c := range []struct{ a, b, want string }{
		{"x\ny\n", "x\ny\n", "(no change)"},
		{"x\ny\nz\n", "x\nY\nz\n", "+2: Y\n-2: y\n"},
		{"", "a\n", "+1: a\n"},
		{"a\nb\n", "b\n", "-1: a\n"},
	} {
		if got := Lines(c.a, c.b); got != c.want {
			t.Errorf("Lines(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func TestLinesSummarisesTextsTooLargeToCompare(t *testing.T) {
	big := strings.Repeat("a\n", 3000)
	got := Lines(big, big+"b\n")
	if !strings.HasPrefix(got, "(document too large to diff") {
		t.Errorf("Lines of large texts = %.80q, want a summary", got)
	}
}
