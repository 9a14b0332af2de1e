package mcpwire

import (
	"bytes"
	"fmt"
	"sync"
	"unicode"
	"unicode/utf8"
)

// span is the half-open byte range [start, end) of a value in the input.
type span struct{ start, end int }

// keyRef locates one key of an open object: the raw key (with quotes) in
// the input and its unescaped, case-folded bytes in scanner.arena.
type keyRef struct {
	raw, fold span
}

// bigObject is the number of keys from which an object's key set moves from
// a linear scan to a map, so an object with many keys costs O(n), not O(n²).
const bigObject = 16

// scanner is a single-pass validating JSON scanner. It checks grammar,
// UTF-8, nesting depth and, when checkKeys is set, duplicate and
// case-variant keys in every object. It builds nothing except the key sets
// of the objects that are open, and the envelope records of messages.
// A scanner is used by one goroutine at a time; scanners are pooled.
type scanner struct {
	data      []byte
	pos       int
	maxDepth  int
	checkKeys bool

	arena []byte             // folded keys of open objects
	tmp   [2][]byte          // scratch for unescaping clashing keys
	keys  []keyRef           // keys of open objects, innermost last
	sets  []map[string]int32 // per depth: key set of a big object
	msgs  []msgRec           // envelopes recorded by top
}

var scannerPool = sync.Pool{New: func() any { return new(scanner) }}

func getScanner(data []byte, maxDepth int, checkKeys bool) *scanner {
	s := scannerPool.Get().(*scanner)
	s.data, s.pos, s.maxDepth, s.checkKeys = data, 0, maxDepth, checkKeys
	s.arena, s.keys, s.msgs = s.arena[:0], s.keys[:0], s.msgs[:0]
	return s
}

// putScanner returns s to the pool, dropping buffers that a huge input grew
// so one large message does not pin memory for ever.
func putScanner(s *scanner) {
	const maxKeep = 64 << 10
	s.data = nil
	if cap(s.arena) > maxKeep {
		s.arena = nil
	}
	if cap(s.keys) > maxKeep/16 {
		s.keys = nil
	}
	if cap(s.msgs) > 1024 {
		s.msgs = nil
	}
	for i, m := range s.sets {
		if m != nil && len(m) > 1024 {
			s.sets[i] = nil
		}
	}
	scannerPool.Put(s)
}

// fail wraps a sentinel with a detail and the current offset.
func (s *scanner) fail(sentinel error, detail string) error {
	return fmt.Errorf("%w: %s at offset %d", sentinel, detail, s.pos)
}

func (s *scanner) syntax(detail string) error { return s.fail(ErrSyntax, detail) }

func (s *scanner) eof() bool { return s.pos >= len(s.data) }

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// validate scans exactly one JSON value surrounded by optional whitespace.
func (s *scanner) validate() error {
	s.ws()
	if err := s.value(0); err != nil {
		return err
	}
	s.ws()
	if !s.eof() {
		return s.syntax("data after the JSON value")
	}
	return nil
}

// value scans one value at s.pos; depth is the nesting level of the
// enclosing container (0 at top level).
func (s *scanner) value(depth int) error {
	if s.eof() {
		return s.syntax("unexpected end of input")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth+1, nil)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		return s.str()
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return s.syntax(fmt.Sprintf("unexpected character %q", c))
	}
}

func (s *scanner) literal(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return s.syntax("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

func (s *scanner) number() error {
	d, i := s.data, s.pos
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		for i++; i < len(d) && isDigit(d[i]); i++ {
		}
	default:
		s.pos = i
		return s.syntax("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.syntax("invalid number fraction")
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			s.pos = i
			return s.syntax("invalid number exponent")
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	s.pos = i
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (s *scanner) array(depth int) error {
	if depth > s.maxDepth {
		return s.fail(ErrTooDeep, fmt.Sprintf("more than %d levels", s.maxDepth))
	}
	s.pos++ // '['
	s.ws()
	if !s.eof() && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.eof() {
			return s.syntax("unterminated array")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			return nil
		default:
			return s.syntax("expected ',' or ']' in array")
		}
	}
}

// object scans an object at nesting level depth. When rec is not nil the
// object is a JSON-RPC message and its envelope members are recorded in rec.
func (s *scanner) object(depth int, rec *msgRec) error {
	if depth > s.maxDepth {
		return s.fail(ErrTooDeep, fmt.Sprintf("more than %d levels", s.maxDepth))
	}
	start := s.pos
	s.pos++ // '{'
	keyBase, arenaBase := len(s.keys), len(s.arena)
	s.ws()
	if !s.eof() && s.data[s.pos] == '}' {
		s.pos++
		if rec != nil {
			rec.span = span{start, s.pos}
		}
		return nil
	}
	for {
		if s.eof() || s.data[s.pos] != '"' {
			return s.syntax("expected string key")
		}
		keyStart := s.pos
		var err error
		if !s.checkKeys && rec == nil {
			if err = s.str(); err != nil {
				return err
			}
		} else {
			foldStart := len(s.arena)
			if s.arena, err = s.foldedStr(s.arena); err != nil {
				return err
			}
			k := keyRef{raw: span{keyStart, s.pos}, fold: span{foldStart, len(s.arena)}}
			if hasASCIIControl(s.arena[foldStart:]) {
				s.pos = keyStart
				return s.fail(ErrInvalidKey, "escaped control character in key")
			}
			if err := s.addKey(depth, keyBase, k); err != nil {
				return err
			}
			if rec != nil {
				rec.classify(s.data[keyStart:s.pos], s.arena[k.fold.start:k.fold.end], k.raw)
			}
		}
		s.ws()
		if s.eof() || s.data[s.pos] != ':' {
			return s.syntax("expected ':' after object key")
		}
		s.pos++
		s.ws()
		valStart := s.pos
		if err := s.value(depth); err != nil {
			return err
		}
		if rec != nil && rec.last >= 0 {
			rec.has[rec.last] = true
			rec.val[rec.last] = span{valStart, s.pos}
		}
		s.ws()
		if s.eof() {
			return s.syntax("unterminated object")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case '}':
			s.pos++
			s.keys, s.arena = s.keys[:keyBase], s.arena[:arenaBase]
			if rec != nil {
				rec.span = span{start, s.pos}
			}
			return nil
		default:
			return s.syntax("expected ',' or '}' in object")
		}
	}
}

// addKey adds k to the key set of the object at depth whose keys start at
// s.keys[base], failing if an equal or case-variant key is already there.
func (s *scanner) addKey(depth, base int, k keyRef) error {
	fold := s.arena[k.fold.start:k.fold.end]
	n := len(s.keys) - base
	if n < bigObject {
		for _, o := range s.keys[base:] {
			if bytes.Equal(s.arena[o.fold.start:o.fold.end], fold) {
				return s.keyClash(o, k)
			}
		}
		s.keys = append(s.keys, k)
		if n+1 == bigObject {
			m := s.keySet(depth)
			for i, o := range s.keys[base:] {
				m[string(s.arena[o.fold.start:o.fold.end])] = int32(base + i)
			}
		}
		return nil
	}
	m := s.sets[depth]
	if i, ok := m[string(fold)]; ok {
		return s.keyClash(s.keys[i], k)
	}
	m[string(fold)] = int32(len(s.keys))
	s.keys = append(s.keys, k)
	return nil
}

// keySet returns the cleared map used for a big object at depth.
func (s *scanner) keySet(depth int) map[string]int32 {
	for len(s.sets) <= depth {
		s.sets = append(s.sets, nil)
	}
	if s.sets[depth] == nil {
		s.sets[depth] = make(map[string]int32, 2*bigObject)
	} else {
		clear(s.sets[depth])
	}
	return s.sets[depth]
}

func (s *scanner) keyClash(old, k keyRef) error {
	s.pos = k.raw.start
	s.tmp[0] = unquote(s.tmp[0][:0], s.data[old.raw.start:old.raw.end])
	s.tmp[1] = unquote(s.tmp[1][:0], s.data[k.raw.start:k.raw.end])
	a, b := s.tmp[0], s.tmp[1]
	if bytes.Equal(a, b) {
		return s.fail(ErrDuplicateKey, fmt.Sprintf("key %q", clip(b)))
	}
	return s.fail(ErrCaseVariantKey, fmt.Sprintf("key %q case-folds to earlier key %q", clip(b), clip(a)))
}

// hasASCIIControl reports whether b holds a C0 control or DEL byte.
func hasASCIIControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// clip shortens b for an error message.
func clip(b []byte) string {
	const max = 64
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// appendFold appends to dst the case fold of the valid UTF-8 key: every
// rune is replaced by the smallest rune of its Unicode simple-fold orbit, so
// two keys fold equal exactly when strings.EqualFold (and encoding/json's
// field matching) consider them equal. ASCII letters fold to upper case.
func appendFold(dst, key []byte) []byte {
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(key[i:])
		dst = utf8.AppendRune(dst, foldRune(r))
		i += n
	}
	return dst
}

// foldRune returns the smallest rune in r's simple case-folding orbit.
func foldRune(r rune) rune {
	min := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < min {
			min = f
		}
	}
	return min
}

// plainASCII marks bytes that may appear in a string without further checks.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans and validates the string at s.pos.
func (s *scanner) str() error {
	d := s.data
	i := s.pos + 1
	for {
		for i < len(d) && plainASCII[d[i]] {
			i++
		}
		if i >= len(d) {
			s.pos = i
			return s.syntax("unterminated string")
		}
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return nil
		case c == '\\':
			s.pos = i
			_, n, err := s.escape()
			if err != nil {
				return err
			}
			i += n
		case c < 0x20:
			s.pos = i
			return s.syntax("control character in string")
		default:
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n <= 1 {
				s.pos = i
				return s.fail(ErrInvalidUTF8, "invalid UTF-8 byte in string")
			}
			i += n
		}
	}
}

// foldedStr scans and validates the string at s.pos like str and appends the case fold
// (see appendFold) of its unescaped value to dst.
func (s *scanner) foldedStr(dst []byte) ([]byte, error) {
	d := s.data
	i := s.pos + 1
	for {
		for i < len(d) && plainASCII[d[i]] {
			c := d[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
		}
		if i >= len(d) {
			s.pos = i
			return dst, s.syntax("unterminated string")
		}
		var r rune
		switch c := d[i]; {
		case c == '"':
			s.pos = i + 1
			return dst, nil
		case c == '\\':
			s.pos = i
			var n int
			var err error
			if r, n, err = s.escape(); err != nil {
				return dst, err
			}
			i += n
		case c < 0x20:
			s.pos = i
			return dst, s.syntax("control character in string")
		default:
			var n int
			r, n = utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n <= 1 {
				s.pos = i
				return dst, s.fail(ErrInvalidUTF8, "invalid UTF-8 byte in string")
			}
			i += n
		}
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			dst = append(dst, byte(r))
		} else {
			dst = utf8.AppendRune(dst, foldRune(r))
		}
	}
}

// escape decodes the escape sequence at s.pos and returns the rune and the
// length of the sequence. A surrogate pair is one sequence; a lone
// surrogate is ErrInvalidUTF8.
func (s *scanner) escape() (rune, int, error) {
	d := s.data[s.pos:]
	if len(d) < 2 {
		return 0, 0, s.syntax("unterminated escape")
	}
	switch d[1] {
	case '"', '\\', '/':
		return rune(d[1]), 2, nil
	case 'b':
		return '\b', 2, nil
	case 'f':
		return '\f', 2, nil
	case 'n':
		return '\n', 2, nil
	case 'r':
		return '\r', 2, nil
	case 't':
		return '\t', 2, nil
	case 'u':
	default:
		return 0, 0, s.syntax("invalid escape")
	}
	r, ok := hex4(d[2:])
	if !ok {
		return 0, 0, s.syntax("invalid \\u escape")
	}
	switch {
	case r < 0xD800 || r >= 0xE000:
		return r, 6, nil
	case r >= 0xDC00:
		return 0, 0, s.fail(ErrInvalidUTF8, "lone low surrogate escape")
	}
	if len(d) < 12 || d[6] != '\\' || d[7] != 'u' {
		return 0, 0, s.fail(ErrInvalidUTF8, "lone high surrogate escape")
	}
	lo, ok := hex4(d[8:])
	if !ok {
		return 0, 0, s.syntax("invalid \\u escape")
	}
	if lo < 0xDC00 || lo >= 0xE000 {
		return 0, 0, s.fail(ErrInvalidUTF8, "high surrogate escape without low surrogate")
	}
	return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), 12, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}
