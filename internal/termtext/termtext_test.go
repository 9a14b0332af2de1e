package termtext_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/agentmesh/agentmesh/internal/termtext"
)

// Hostile holds one of each kind of character a peer could use against a
// terminal, around ordinary text.
const Hostile = "ok\x1b]0;owned\x07\x1b[2J\r\n\tfake row\x7f\u009b31m\u202egnp.exe\u2066x\u2069\u200b\u00ad\ufeff\U000e0041\u2028\ufe0f\u3164end"

// visibleOnly reports the first character of s that a terminal could act on
// or would not draw: what no escaped output may contain.
func visibleOnly(s string, allowNewline bool) (rune, bool) {
	for _, r := range s {
		if r == '\n' && allowNewline {
			continue
		}
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp,
			unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) {
			return r, false
		}
	}
	return 0, true
}

func TestEscapeLeavesNoControlOrInvisibleCharacter(t *testing.T) {
	got := termtext.Escape(Hostile + "\xff\xc3")
	if r, ok := visibleOnly(got, false); !ok || !utf8.ValidString(got) {
		t.Fatalf("Escape left %U in %q", r, got)
	}
	for _, want := range []string{`ok\x1b]0;owned\x07`, `\x0d\x0a\x09fake row\x7f\u009b31m\u202egnp.exe`, `\u2066x\u2069\u200b\u00ad\ufeff\U000e0041\u2028\ufe0f\u3164end`, `\xff\xc3`} {
		if !strings.Contains(got, want) {
			t.Errorf("Escape(...) = %q, want it to contain %q", got, want)
		}
	}
}

func TestEscapeKeepsOrdinaryTextIncludingNonLatinScripts(t *testing.T) {
	for _, s := range []string{"", "payments-db", `C:\path "quoted"`, "naïve café", "日本語のツール", "עברית", "emoji 🚀", "tag:a,tag:b"} {
		if got := termtext.Escape(s); got != s {
			t.Errorf("Escape(%q) = %q, want it unchanged", s, got)
		}
	}
}

func TestEscapeLinesKeepsOnlyNewlines(t *testing.T) {
	got := termtext.EscapeLines("line 1\nline 2\x1b[1A\r\u202e")
	if got != "line 1\nline 2\\x1b[1A\\x0d\\u202e" {
		t.Fatalf("EscapeLines = %q", got)
	}
	if r, ok := visibleOnly(got, true); !ok {
		t.Fatalf("EscapeLines left %U", r)
	}
}

func TestJSONEscapesWhatEncodingJSONLeavesRawAndKeepsTheValue(t *testing.T) {
	in := map[string]any{"name": Hostile, "nested": []any{Hostile, 1.5, true, nil}, Hostile: "key"}
	raw, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	// encoding/json by itself leaves the bidi override raw: that is why
	// the CLI passes every JSON output through JSON.
	if !bytes.Contains(raw, []byte("\u202e")) {
		t.Fatal("encoding/json escaped U+202E itself; JSON's reason to exist is gone, revisit")
	}
	got := termtext.JSON(raw)
	if r, ok := visibleOnly(strings.NewReplacer("\n", "", "\t", "").Replace(string(got)), false); !ok {
		t.Fatalf("JSON left %U in %s", r, got)
	}
	var back map[string]any
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("escaped JSON does not decode: %v\n%s", err, got)
	}
	want, _ := json.Marshal(in)
	again, _ := json.Marshal(back)
	if !bytes.Equal(want, again) {
		t.Fatalf("escaping changed the value:\n%s\n%s", want, again)
	}
}

func TestJSONReplacesInvalidUTF8AsADecoderWould(t *testing.T) {
	raw := []byte("{\"a\":\"x\xffy\"}")
	var want, got map[string]string
	json.Unmarshal(raw, &want)
	if err := json.Unmarshal(termtext.JSON(raw), &got); err != nil || got["a"] != want["a"] {
		t.Fatalf("got %q (%v), want %q", got["a"], err, want["a"])
	}
}

func TestJSONWriterHandlesCharactersSplitAcrossWrites(t *testing.T) {
	line, _ := json.Marshal(map[string]string{"tool": Hostile + "日本🚀"})
	line = append(line, '\n')
	want := termtext.JSON(line)
	for size := 1; size <= 5; size++ {
		var out bytes.Buffer
		w := termtext.NewJSONWriter(&out)
		for p := line; len(p) > 0; {
			n := min(size, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("writes of %d bytes: got %s, want %s", size, out.Bytes(), want)
		}
	}
	var out bytes.Buffer
	w := termtext.NewJSONWriter(&out)
	w.Write([]byte("\"\xe6\x97")) // cut off for good
	w.Flush()
	if out.String() != `"\ufffd\ufffd` {
		t.Fatalf("flushed cut-off sequence as %q", out.String())
	}
}

func FuzzEscape(f *testing.F) {
	f.Add(Hostile)
	f.Add("\xff\xfe\xc3")
	f.Fuzz(func(t *testing.T, s string) {
		got := termtext.Escape(s)
		if r, ok := visibleOnly(got, false); !ok || !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q left %U", s, got, r)
		}
		if b, err := json.Marshal(s); err == nil {
			var back string
			if err := json.Unmarshal(termtext.JSON(b), &back); err != nil || utf8.ValidString(s) && back != s {
				t.Fatalf("JSON(%q) decodes to %q, %v", b, back, err)
			}
		}
	})
}
