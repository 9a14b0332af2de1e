package policy

import (
	"errors"
	"testing"
)

func TestGlobMatchesStarAndQuestionMark(t *testing.T) {
	tests := []struct {
		pat, s string
		want   bool
	}{
		{"query", "query", true},
		{"query", "query2", false},
		{"query", "Query", false},
		{"list_*", "list_tables", true},
		{"list_*", "list_", true},
		{"list_*", "lis", false},
		{"*_table", "drop_table", true},
		{"*_table", "drop_tables", false},
		{"*", "", true},
		{"*", "anything/at/all", true},
		{"**", "x", true},
		{"file:///data/public/*", "file:///data/public/a/b/c", true},
		{"file:///data/public/*", "file:///data/private/a", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbYcZ", false},
		{"a*b*c", "acb", false},
		{"?", "x", true},
		{"?", "", false},
		{"?", "xy", false},
		{"?", "é", true}, // one character, two bytes
		{"llama-3?", "llama-3b", true},
		{"llama-3?", "llama-3", false},
		{"*?", "", false},
		{"*?", "a", true},
		{"a?c*", "abcdef", true},
		{"*.md", "notes.md", true},
		{"*.md", "notes.mdx", false},
		{"x[1]", "x[1]", true}, // brackets are not special
		{"x[1]", "x1", false},
		{`a\*`, `a\bc`, true}, // backslash is not an escape
		{"*é*", "caféine", true},
		{"*aab", "aaaab", true},
	}
	for _, tt := range tests {
		g := compileGlob(tt.pat)
		if got := g.match(tt.s); got != tt.want {
			t.Errorf("glob %q match %q = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
		if got := matchGlob(tt.pat, tt.s); got != tt.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
	}
}

func TestGlobPrefixMatchesWhenSomeExpansionCould(t *testing.T) {
	tests := []struct {
		pat, prefix string
		want        bool
	}{
		{"file:///data/public/*", "file:///data/public/", true},
		{"file:///data/public/*", "file:///data/", true},
		{"file:///data/public/*", "file:///data/public/sub/", true},
		{"file:///data/public/*", "file:///etc/", false},
		{"db://x/?", "db://x/", true},
		{"db://x/?", "db://x/ab", false},
		{"exact://a", "exact://a", true},
		{"exact://a", "exact://ab", false},
		{"*", "", true},
	}
	for _, tt := range tests {
		if got := matchGlobPrefix(tt.pat, tt.prefix); got != tt.want {
			t.Errorf("matchGlobPrefix(%q, %q) = %v, want %v", tt.pat, tt.prefix, got, tt.want)
		}
	}
}

func TestGlobListExcludesWithinList(t *testing.T) {
	l, err := newGlobList([]string{"*", "!drop_*", "!truncate"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{"query": true, "drop_table": false, "truncate": false, "truncate2": true} {
		if got := l.match(s); got != want {
			t.Errorf("match(%q) = %v, want %v", s, got, want)
		}
	}
	var nilList *globList
	if nilList.match("x") {
		t.Error("a nil list (absent field) matched")
	}
}

func TestCheckGlobRejectsMalformedEntries(t *testing.T) {
	tests := []struct {
		entry string
		want  error
	}{
		{"", errGlobEmpty},
		{"!", errGlobBang},
		{"!!x", errGlobDouble},
		{" query", errGlobChar},
		{"query\n", errGlobChar},
		{"a\x00b", errGlobChar},
		{"\xff", errGlobChar},
		{"ok_*", nil},
		{"!drop_*", nil},
	}
	for _, tt := range tests {
		if err := checkGlob(tt.entry); !errors.Is(err, tt.want) {
			t.Errorf("checkGlob(%q) = %v, want %v", tt.entry, err, tt.want)
		}
	}
	if _, err := newGlobList([]string{"!drop_*"}, false); !errors.Is(err, errGlobOnlyExcl) {
		t.Errorf("only exclusions: err = %v, want %v", err, errGlobOnlyExcl)
	}
}

func TestUnsafeURIRefusesTraversalAndEncodedSeparators(t *testing.T) {
	tests := []struct {
		uri  string
		want bool
	}{
		{"file:///data/public/a.txt", false},
		{"file:///data/public/..hidden", false},
		{"file:///data/public/a..b", false},
		{"db://payments/public/charges", false},
		{"file:///data/public/%41", false},
		{"file:///data/public/../secret", true},
		{"file:///data/public/..", true},
		{"../x", true},
		{"file:..", true},
		{`file:///data/public\..\secret`, true},
		{"file:///data/public/%2e%2e/secret", true},
		{"file:///data/public/%2E%2E/secret", true},
		{"file:///data/public%2fsecret", true},
		{"file:///data/public%5csecret", true},
		{"file:///data/public/%252e%252e/secret", true},
		{"db://x?path=../y", true},
		{"file:///a\x00b", true},
		{"file:///a\nb", true},
	}
	for _, tt := range tests {
		if got := unsafeURI(tt.uri); got != tt.want {
			t.Errorf("unsafeURI(%q) = %v, want %v", tt.uri, got, tt.want)
		}
	}
}
