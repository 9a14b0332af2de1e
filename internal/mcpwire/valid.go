package mcpwire

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// The functions in this file read bytes that the scanner has already
// validated (grammar, UTF-8, surrogates). They do not re-check and must not
// be given unvalidated input.

// skipWS returns the index of the first non-whitespace byte at or after i.
func skipWS(d []byte, i int) int {
	for i < len(d) {
		switch d[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just after the string starting at d[i].
// A byte loop beats bytes.IndexByte here: most JSON strings are short.
func skipString(d []byte, i int) int {
	for i++; i < len(d); i++ {
		switch d[i] {
		case '"':
			return i + 1
		case '\\':
			i++
		}
	}
	return len(d)
}

// trimValue returns the validated single value in b without the whitespace
// around it.
func trimValue(b []byte) []byte {
	end := len(b)
	for end > 0 {
		switch b[end-1] {
		case ' ', '\t', '\n', '\r':
			end--
			continue
		}
		break
	}
	return b[skipWS(b[:end], 0):end]
}

// skipValue returns the index just after the value starting at d[i].
func skipValue(d []byte, i int) int {
	switch d[i] {
	case '"':
		return skipString(d, i)
	case '{', '[':
		depth := 0
		for i < len(d) {
			switch d[i] {
			case '"':
				i = skipString(d, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number or literal
		for i < len(d) {
			switch d[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// objIter walks the members of a validated object.
type objIter struct {
	d      []byte
	pos    int
	valPos int    // offset in d of the value last returned
	buf    []byte // scratch for unescaped keys
}

// newObjIter starts an iterator over obj, which must begin with '{'.
func newObjIter(obj []byte) objIter {
	return objIter{d: obj, pos: 1}
}

// next returns the next member's unescaped key and its value bytes. The key
// is valid until the next call.
func (it *objIter) next() (key, val []byte, ok bool) {
	key, ok = it.nextKey()
	if !ok {
		return nil, nil, false
	}
	end := skipValue(it.d, it.valPos)
	val, it.pos = it.d[it.valPos:end], end
	return key, val, true
}

// nextKey returns the next member's unescaped key and leaves it.valPos at
// the start of its value; the caller must then set it.pos to the end of the
// value (next does both).
func (it *objIter) nextKey() (key []byte, ok bool) {
	d := it.d
	i := skipWS(d, it.pos)
	if i >= len(d) || d[i] == '}' {
		return nil, false
	}
	if d[i] == ',' {
		i = skipWS(d, i+1)
	}
	end := skipString(d, i)
	key = d[i+1 : end-1]
	if bytes.IndexByte(key, '\\') >= 0 {
		it.buf = unquote(it.buf[:0], d[i:end])
		key = it.buf
	}
	i = skipWS(d, end)
	it.valPos = skipWS(d, i+1) // after ':'
	return key, true
}

// arrIter walks the elements of a validated array. When next reports no
// more elements, pos is just after the closing ']'.
type arrIter struct {
	d   []byte
	pos int
}

// newArrIter starts an iterator over the array at d[start].
func newArrIter(d []byte, start int) arrIter { return arrIter{d: d, pos: start + 1} }

// next returns the next element.
func (it *arrIter) next() (val []byte, ok bool) {
	d := it.d
	i := skipWS(d, it.pos)
	if i >= len(d) || d[i] == ']' {
		it.pos = i + 1
		return nil, false
	}
	if d[i] == ',' {
		i = skipWS(d, i+1)
	}
	end := skipValue(d, i)
	it.pos = end
	return d[i:end], true
}

// unquote appends the unescaped contents of the validated string q
// (including its quotes) to dst.
func unquote(dst, q []byte) []byte {
	q = q[1 : len(q)-1]
	for len(q) > 0 {
		i := bytes.IndexByte(q, '\\')
		if i < 0 {
			return append(dst, q...)
		}
		dst = append(dst, q[:i]...)
		q = q[i:]
		var r rune
		n := 2
		switch q[1] {
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			r, _ = hex4(q[2:])
			n = 6
			if r >= 0xD800 && r < 0xDC00 {
				lo, _ := hex4(q[8:])
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				n = 12
			}
		default: // '"', '\\', '/'
			r = rune(q[1])
		}
		dst = utf8.AppendRune(dst, r)
		q = q[n:]
	}
	return dst
}

// stringBytes returns the unescaped contents of the validated string q,
// appending to buf[:0] only when q has escapes.
func stringBytes(buf, q []byte) []byte {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	return unquote(buf[:0], q)
}

// buildValue decodes the validated value at d[i] the way encoding/json with
// UseNumber decodes into an any, and returns the index after it.
func buildValue(d []byte, i int) (any, int) {
	switch d[i] {
	case '{':
		m := make(map[string]any)
		i = skipWS(d, i+1)
		if d[i] == '}' {
			return m, i + 1
		}
		for {
			end := skipString(d, i)
			k := string(stringBytes(nil, d[i:end]))
			i = skipWS(d, skipWS(d, end)+1)
			var v any
			v, i = buildValue(d, i)
			m[k] = v
			i = skipWS(d, i)
			if d[i] == '}' {
				return m, i + 1
			}
			i = skipWS(d, i+1)
		}
	case '[':
		a := []any{}
		i = skipWS(d, i+1)
		if d[i] == ']' {
			return a, i + 1
		}
		for {
			var v any
			v, i = buildValue(d, i)
			a = append(a, v)
			i = skipWS(d, i)
			if d[i] == ']' {
				return a, i + 1
			}
			i = skipWS(d, i+1)
		}
	case '"':
		end := skipString(d, i)
		return string(stringBytes(nil, d[i:end])), end
	case 't':
		return true, i + 4
	case 'f':
		return false, i + 5
	case 'n':
		return nil, i + 4
	default:
		end := skipValue(d, i)
		return json.Number(d[i:end]), end
	}
}
