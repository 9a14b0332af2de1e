package mcpwire

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// TestFoldMatchesEqualFoldForEveryRune checks, over all of Unicode, that
// two runes fold to the same value exactly when strings.EqualFold says they
// are equal, so the key-clash check finds every pair EqualFold (and
// encoding/json's field matching, which uses the same orbits) would merge.
func TestFoldMatchesEqualFoldForEveryRune(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		f := foldRune(r)
		if foldRune(f) != f {
			t.Fatalf("foldRune(%U) = %U is not a fixed point", r, f)
		}
		if !strings.EqualFold(string(r), string(f)) {
			t.Fatalf("foldRune(%U) = %U, which EqualFold does not match", r, f)
		}
		for o := unicode.SimpleFold(r); o != r; o = unicode.SimpleFold(o) {
			if foldRune(o) != f {
				t.Fatalf("%U and %U are in one fold orbit but fold to %U and %U", r, o, f, foldRune(o))
			}
		}
	}
}

func TestFoldOfSpecialRunes(t *testing.T) {
	tests := []struct{ a, b string }{
		{"k", "\u212a"}, // Kelvin sign
		{"K", "\u212a"},
		{"s", "\u017f"}, // long s
		{"S", "\u017f"},
		{"σ", "ς"},
		{"ǅ", "ǆ"},
		{"Name", "nAME"},
	}
	for _, tt := range tests {
		fa, fb := appendFold(nil, []byte(tt.a)), appendFold(nil, []byte(tt.b))
		if string(fa) != string(fb) {
			t.Errorf("fold(%q) = %q, fold(%q) = %q; want equal", tt.a, fa, tt.b, fb)
		}
	}
}

// TestEncodingJSONBindsFoldedKeys documents why the clash check exists:
// encoding/json binds a lone Kelvin-sign key to a "k..." field.
func TestEncodingJSONBindsFoldedKeys(t *testing.T) {
	var v struct {
		Kind string `json:"kind"`
		SQL  string `json:"sql"`
	}
	if err := json.Unmarshal([]byte(`{"\u212aind":"drop","\u017fQL":"delete"}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.Kind != "drop" || v.SQL != "delete" {
		t.Skipf("encoding/json no longer folds these keys (%+v); the check is still correct", v)
	}
	in := call(`{"name":"q","arguments":{"kind":"read","\u212aind":"drop"}}`)
	if _, _, err := Decode([]byte(in), Limits{}); err == nil {
		t.Error("Decode accepted a Kelvin-sign case variant")
	}
}
