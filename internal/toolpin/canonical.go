package toolpin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of a value Canonical accepts.
const MaxDepth = 64

// ErrInvalidJSON wraps every reason Canonical refuses its input.
var ErrInvalidJSON = errors.New("invalid JSON")

// Canonical returns the canonical form of the JSON value b, as RFC 8785
// (JCS) defines it: object members sorted by the UTF-16 code units of
// their names, no insignificant whitespace, numbers written as
// ECMAScript writes an IEEE 754 double (shortest round-trip digits,
// exponent form outside 1e-6 <= |x| < 1e21, -0 as 0), strings with only
// '"', '\\' and control characters escaped (the short escapes \b \t \n
// \f \r, others as lower-case \u00xx) and every other character as UTF-8.
//
// It is stricter than JCS needs: invalid UTF-8, duplicate member names,
// numbers outside the double range, trailing data and nesting deeper than
// MaxDepth are refused (wrapping ErrInvalidJSON), so that two inputs a
// server and a reviewer could read differently never share a hash.
func Canonical(b []byte) ([]byte, error) {
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrInvalidJSON)
	}
	if err := checkSurrogates(b); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out bytes.Buffer
	if err := canonValue(dec, &out, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the value", ErrInvalidJSON)
	}
	return out.Bytes(), nil
}

func canonValue(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	return canonToken(dec, tok, out, depth)
}

func canonToken(dec *json.Decoder, tok json.Token, out *bytes.Buffer, depth int) error {
	switch t := tok.(type) {
	case json.Delim:
		if depth >= MaxDepth {
			return fmt.Errorf("%w: nested more than %d levels deep", ErrInvalidJSON, MaxDepth)
		}
		if t == '[' {
			out.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					out.WriteByte(',')
				}
				if err := canonValue(dec, out, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidJSON, err)
			}
			out.WriteByte(']')
			return nil
		}
		if t != '{' {
			return fmt.Errorf("%w: unexpected %q", ErrInvalidJSON, t)
		}
		type member struct {
			name  string
			key   []uint16
			value []byte
		}
		var members []member
		seen := map[string]bool{}
		for dec.More() {
			nt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidJSON, err)
			}
			name, ok := nt.(string)
			if !ok {
				return fmt.Errorf("%w: object key is not a string", ErrInvalidJSON)
			}
			if seen[name] {
				return fmt.Errorf("%w: duplicate key %q", ErrInvalidJSON, name)
			}
			seen[name] = true
			var v bytes.Buffer
			if err := canonValue(dec, &v, depth+1); err != nil {
				return err
			}
			members = append(members, member{name, utf16.Encode([]rune(name)), v.Bytes()})
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidJSON, err)
		}
		slices.SortFunc(members, func(a, b member) int { return slices.Compare(a.key, b.key) })
		out.WriteByte('{')
		for i, m := range members {
			if i > 0 {
				out.WriteByte(',')
			}
			writeString(out, m.name)
			out.WriteByte(':')
			out.Write(m.value)
		}
		out.WriteByte('}')
		return nil
	case string:
		writeString(out, t)
	case json.Number:
		s, err := canonNumber(string(t))
		if err != nil {
			return err
		}
		out.WriteString(s)
	case bool:
		if t {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case nil:
		out.WriteString("null")
	default:
		return fmt.Errorf("%w: unexpected token", ErrInvalidJSON)
	}
	return nil
}

// writeString writes s as JCS serialises a string.
func writeString(out *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	out.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			out.WriteString(`\"`)
		case r == '\\':
			out.WriteString(`\\`)
		case r == '\b':
			out.WriteString(`\b`)
		case r == '\t':
			out.WriteString(`\t`)
		case r == '\n':
			out.WriteString(`\n`)
		case r == '\f':
			out.WriteString(`\f`)
		case r == '\r':
			out.WriteString(`\r`)
		case r < 0x20:
			out.WriteString(`\u00`)
			out.WriteByte(hex[r>>4])
			out.WriteByte(hex[r&0xf])
		default:
			out.WriteRune(r)
		}
	}
	out.WriteByte('"')
}

// canonNumber writes the JSON number s as ECMAScript's Number::toString
// writes the double nearest to it.
func canonNumber(s string) (string, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("%w: number %.40q out of range", ErrInvalidJSON, s)
	}
	if f == 0 {
		return "0", nil
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// Shortest digits that round-trip, as d.ddde±x.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	k, n := len(digits), x+1 // n: where the decimal point falls
	var b strings.Builder
	b.WriteString(sign)
	switch {
	case k <= n && n <= 21:
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", n-k))
	case 0 < n && n <= 21:
		b.WriteString(digits[:n])
		b.WriteByte('.')
		b.WriteString(digits[n:])
	case -6 < n && n <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -n))
		b.WriteString(digits)
	default:
		b.WriteByte(digits[0])
		if k > 1 {
			b.WriteByte('.')
			b.WriteString(digits[1:])
		}
		b.WriteByte('e')
		if n-1 >= 0 {
			b.WriteByte('+')
		}
		b.WriteString(strconv.Itoa(n - 1))
	}
	return b.String(), nil
}

// checkSurrogates refuses a \u escape of a UTF-16 surrogate that is not
// part of a pair: encoding/json reads it as U+FFFD, so "\ud800" and
// "\ufffd" would otherwise share a canonical form.
func checkSurrogates(b []byte) error {
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 < len(b) && b[i+1] == 'u' {
				r, ok := hex4(b, i+2)
				switch {
				case ok && r >= 0xD800 && r < 0xDC00:
					r2, ok2 := rune(0), false
					if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						r2, ok2 = hex4(b, i+8)
					}
					if !ok2 || r2 < 0xDC00 || r2 >= 0xE000 {
						return fmt.Errorf("%w: unpaired UTF-16 surrogate escape", ErrInvalidJSON)
					}
					i += 11
					continue
				case ok && r >= 0xDC00 && r < 0xE000:
					return fmt.Errorf("%w: unpaired UTF-16 surrogate escape", ErrInvalidJSON)
				}
			}
			i++ // skip the escaped character
		}
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[at:at+4]), 16, 32)
	return rune(v), err == nil
}
