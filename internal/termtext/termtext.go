// Package termtext makes text that others wrote safe to show on an admin's
// terminal: node addresses, tool and prompt names, reasons and details from
// the audit trail, error messages relayed from the coordinator or a gateway.
//
// Threat model: a mesh member (or anybody refused at join, whose attempt is
// still recorded) chooses strings that end up in the CLI's output. Raw, a
// control character could move the cursor, rewrite earlier lines, set the
// window title or, on some terminals, answer back keystrokes; a Unicode
// bidirectional override or an invisible formatting character could reorder
// or hide text, so that a table shows something other than what the trail
// holds. Escape turns every such character into a visible escape, so the
// output shows exactly which characters are there; JSON keeps JSON but
// writes the same characters as \u escapes, which decode to the same
// value.
//
// Escaped, in both forms: C0 controls (tab and newline included, since
// they would forge table columns and lines), DEL, C1 controls, invalid
// UTF-8, and every character Unicode calls a format character (Cf: the
// bidi embeddings, overrides, isolates and marks, zero-width spaces and
// joiners, the soft hyphen, the byte order mark, tag characters), line and
// paragraph separators, and the other default-ignorable code points
// (variation selectors, Hangul fillers, the combining grapheme joiner),
// which terminals draw as nothing. Backslashes are left alone: an escape
// in the output is a fact about the text, never an instruction, and text
// that already contains a backslash cannot hide a control character.
package termtext

import (
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every character a terminal could act on, or that it
// would not draw, written as a Go-style escape: \x1b, \u202e, \U000e0041,
// and \xff for a byte that is not UTF-8. Text without such characters is
// returned unchanged.
func Escape(s string) string { return escape(s, false) }

// EscapeLines is Escape for multi-line text, such as an error that lists
// several problems: newlines are kept, everything else is escaped.
func EscapeLines(s string) string { return escape(s, true) }

func escape(s string, keepNewlines bool) string {
	i := firstUnsafe(s, keepNewlines)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			writeHex(&b, uint32(s[i]), 2)
		case r == '\n' && keepNewlines:
			b.WriteByte('\n')
		case !Unsafe(r):
			b.WriteString(s[i : i+n])
		case r < 0x80:
			b.WriteString(`\x`)
			writeHex(&b, uint32(r), 2)
		case r <= 0xffff:
			b.WriteString(`\u`)
			writeHex(&b, uint32(r), 4)
		default:
			b.WriteString(`\U`)
			writeHex(&b, uint32(r), 8)
		}
		i += n
	}
	return b.String()
}

// firstUnsafe returns the byte offset of the first character of s that
// escape would change, or -1.
func firstUnsafe(s string, keepNewlines bool) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || Unsafe(r) && !(r == '\n' && keepNewlines) {
			return i
		}
		i += n
	}
	return -1
}

// Unsafe reports whether r is a character that Escape writes as an escape.
func Unsafe(r rune) bool {
	switch {
	case r < 0x20 || r == 0x7f:
		return true
	case r < 0x80:
		return false
	case r < 0xa0:
		return true // C1 controls
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}

func writeHex(b *strings.Builder, v uint32, digits int) {
	s := strconv.FormatUint(uint64(v), 16)
	for range digits - len(s) {
		b.WriteByte('0')
	}
	b.WriteString(s)
}

// JSON returns b, JSON text as encoding/json writes it, with every
// character Unsafe reports that encoding/json leaves raw (DEL, C1 controls,
// bidi and other format characters) written as a \u escape, and each byte
// of invalid UTF-8 as \ufffd. The result decodes to the same values as b:
// outside strings JSON text holds only ASCII, so such characters can only
// be inside strings, where \u escapes mean the same characters (and a JSON
// decoder reads invalid UTF-8 as U+FFFD anyway). Tabs, newlines and
// carriage returns are kept: encoding/json escapes them inside strings, so
// raw ones are the white space between tokens.
func JSON(b []byte) []byte {
	var out []byte
	start := 0 // b[start:i] is still to be copied
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x20 && c < 0x7f || c == '\n' || c == '\t' || c == '\r' {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError && !Unsafe(r) || r == utf8.RuneError && n > 1 {
			i += n
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(b)+32)
		}
		out = append(out, b[start:i]...)
		if r == utf8.RuneError {
			r = unicode.ReplacementChar
		}
		out = appendJSONRune(out, r)
		i += n
		start = i
	}
	if out == nil {
		return b
	}
	return append(out, b[start:]...)
}

// appendJSONRune appends r as a JSON \u escape, as a surrogate pair past
// the Basic Multilingual Plane.
func appendJSONRune(out []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	put := func(v rune) {
		out = append(out, '\\', 'u', hex[v>>12&0xf], hex[v>>8&0xf], hex[v>>4&0xf], hex[v&0xf])
	}
	if r > 0xffff {
		r -= 0x10000
		put(0xd800 + r>>10)
		put(0xdc00 + r&0x3ff)
		return out
	}
	put(r)
	return out
}

// JSONWriter applies JSON to a stream of JSON text (such as JSON lines)
// written to it in pieces of any size. Flush writes what a final, cut-off
// UTF-8 sequence left pending.
type JSONWriter struct {
	w       io.Writer
	pending []byte // the start of a UTF-8 sequence cut by the end of a Write
}

// NewJSONWriter returns a JSONWriter that writes to w.
func NewJSONWriter(w io.Writer) *JSONWriter { return &JSONWriter{w: w} }

// Write escapes p and writes it. It reports len(p) when everything that
// could be written was.
func (j *JSONWriter) Write(p []byte) (int, error) {
	buf := p
	if len(j.pending) > 0 {
		buf = append(j.pending, p...)
		j.pending = nil
	}
	// Keep back an incomplete sequence at the end for the next Write.
	cut := len(buf)
	for k := 1; k <= utf8.UTFMax-1 && k <= len(buf); k++ {
		c := buf[len(buf)-k]
		if c < 0x80 {
			break
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(buf[len(buf)-k:]) {
				cut = len(buf) - k
			}
			break
		}
	}
	j.pending = append([]byte(nil), buf[cut:]...)
	if _, err := j.w.Write(JSON(buf[:cut])); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a pending incomplete UTF-8 sequence, as \ufffd escapes.
func (j *JSONWriter) Flush() error {
	if len(j.pending) == 0 {
		return nil
	}
	b := JSON(j.pending)
	j.pending = nil
	_, err := j.w.Write(b)
	return err
}
