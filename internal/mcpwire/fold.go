package mcpwire

import (
	"fmt"
	"unicode/utf8"
)

// Fold returns the case fold of s that Decode uses to compare keys: every
// rune is replaced by the smallest rune of its Unicode simple-fold orbit, so
// Fold(a) == Fold(b) exactly when strings.EqualFold(a, b), the equivalence
// encoding/json uses to bind object keys to struct fields (K, k and the
// Kelvin sign K are one key; so are s, S and ſ). An invalid UTF-8 byte
// folds to U+FFFD.
func Fold(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'a' <= c && c <= 'z' {
			return string(appendFold(make([]byte, 0, len(s)), []byte(s)))
		}
	}
	return s // nothing to fold: no allocation
}

// KeyIs reports whether the object key k is the key want, and fails with
// ErrCaseVariantKey when k differs from want only in case (under Fold): a
// decoder that binds keys case-insensitively would read k as want, while
// code that compares keys exactly would not see it at all.
func KeyIs(k, want string) (bool, error) {
	i, err := keyIndex([]byte(k), want)
	return i == 0 && err == nil, err
}

// keyIndex returns the index in names of the key k, or -1 when k is none
// of them; a key that differs from one of them only in case is
// ErrCaseVariantKey (see KeyIs).
func keyIndex(k []byte, names ...string) (int, error) {
	for i, n := range names {
		if string(k) == n {
			return i, nil
		}
	}
	for _, n := range names {
		if equalFold(k, n) {
			return -1, fmt.Errorf("%w: key %q differs from %q only in case", ErrCaseVariantKey, clip(k), n)
		}
	}
	return -1, nil
}

// equalFold reports whether Fold(a) == Fold(b), without allocating.
func equalFold(a []byte, b string) bool {
	for len(a) > 0 && b != "" {
		ra, na := utf8.DecodeRune(a)
		rb, nb := utf8.DecodeRuneInString(b)
		switch {
		case ra == rb && na == nb && (ra != utf8.RuneError || a[0] == b[0]):
		case ra == utf8.RuneError && na == 1, rb == utf8.RuneError && nb == 1:
			return false
		case foldRune(ra) != foldRune(rb):
			return false
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) == 0 && b == ""
}
