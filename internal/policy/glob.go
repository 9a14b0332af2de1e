package policy

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

// A glob is one compiled pattern of a grant's tools, resources, prompts or
// models list. '*' matches any run of characters, '/' included (resources are
// URIs), and '?' exactly one character; every other character stands for
// itself. Globs are matched by hand rather than through regexp: the common
// shapes (exact, prefix*, *suffix, *) are a string comparison, and the
// general case is a backtracking loop that does not allocate.
type glob struct {
	pat   string
	shape globShape
	lit   string // the literal part for exact, prefix and suffix shapes
}

type globShape uint8

const (
	shapeGeneral globShape = iota
	shapeExact
	shapePrefix // "lit*"
	shapeSuffix // "*lit"
	shapeAny    // "*"
)

func compileGlob(p string) glob {
	g := glob{pat: p}
	stars, quests := strings.Count(p, "*"), strings.Count(p, "?")
	switch {
	case quests > 0:
		g.shape = shapeGeneral
	case stars == 0:
		g.shape, g.lit = shapeExact, p
	case p == strings.Repeat("*", stars):
		g.shape = shapeAny
	case stars == 1 && p[len(p)-1] == '*':
		g.shape, g.lit = shapePrefix, p[:len(p)-1]
	case stars == 1 && p[0] == '*':
		g.shape, g.lit = shapeSuffix, p[1:]
	default:
		g.shape = shapeGeneral
	}
	return g
}

func (g *glob) match(s string) bool {
	switch g.shape {
	case shapeExact:
		return s == g.lit
	case shapePrefix:
		return strings.HasPrefix(s, g.lit)
	case shapeSuffix:
		return strings.HasSuffix(s, g.lit)
	case shapeAny:
		return true
	}
	return matchGlob(g.pat, s)
}

// matchGlob reports whether pattern p matches all of s. A '*' that has to
// give way backtracks by whole runes, so '?' always lines up with a rune.
func matchGlob(p, s string) bool {
	px, sx := 0, 0
	starP, starS := -1, 0
	for px < len(p) || sx < len(s) {
		if px < len(p) {
			switch c := p[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				if sx < len(s) {
					_, n := utf8.DecodeRuneInString(s[sx:])
					px, sx = px+1, sx+n
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px, sx = px+1, sx+1
					continue
				}
			}
		}
		if starP >= 0 && starS < len(s) {
			_, n := utf8.DecodeRuneInString(s[starS:])
			starS += n
			px, sx = starP+1, starS
			continue
		}
		return false
	}
	return true
}

// matchGlobPrefix reports whether some string that p matches starts with s.
// Once the pattern reaches a '*', that star can swallow the rest of s, so
// only the part of p before its first star has to agree with s.
func matchGlobPrefix(p, s string) bool {
	px, sx := 0, 0
	for sx < len(s) {
		if px == len(p) {
			return false
		}
		switch c := p[px]; c {
		case '*':
			return true
		case '?':
			_, n := utf8.DecodeRuneInString(s[sx:])
			px, sx = px+1, sx+n
		default:
			if s[sx] != c {
				return false
			}
			px, sx = px+1, sx+1
		}
	}
	return true
}

// globList is a compiled list: an item matches when some include matches it
// and no exclude ('!' entry) does.
//
// In a resources list (foldExcl), excludes match without regard to case:
// their patterns and the URI are compared after uriFold. A URI path is case
// sensitive to RFC 3986 and to the glob, but a server on a case-insensitive
// file system (macOS, Windows) reads "file:///public/SECRET" as
// "file:///public/secret", so an exclusion that matched case-sensitively
// would not hold there. Includes stay case-sensitive: together this fails
// closed either way.
type globList struct {
	incl, excl []glob
	foldExcl   bool
}

func (l *globList) match(s string) bool {
	if l == nil {
		return false
	}
	hit := false
	for i := range l.incl {
		if l.incl[i].match(s) {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	return !l.excluded(s)
}

// excluded reports whether an exclude matches s. In a resources list an
// exclude also matches the forms of s that a server may read as the same
// resource (see resourceForms).
func (l *globList) excluded(s string) bool {
	if len(l.excl) == 0 {
		return false
	}
	if !l.foldExcl {
		return l.excludes(s)
	}
	var forms [5]string
	for _, f := range resourceForms(uriFold(s), forms[:0]) {
		if l.excludes(f) {
			return true
		}
	}
	return false
}

func (l *globList) excludes(s string) bool {
	for i := range l.excl {
		if l.excl[i].match(s) {
			return true
		}
	}
	return false
}

// resourceForms appends to out the canonical (and folded) URI u and the
// forms of it that a server may resolve to the same resource although RFC
// 3986 calls them different: u without its fragment (never sent to an HTTP
// server, dropped by file servers), without its query (a file server that
// reads the URL's pathname ignores it), and that last form with its
// trailing slash removed or added (a server resolving paths with
// path.resolve reads "/public/secret/" as "/public/secret"). An exclusion
// matched against every form holds however the server reads u; inclusions
// are matched against u alone, so that together the check fails closed.
// In canonical form the first '?' starts the query and the first '#' the
// fragment: both are percent-encoded in a path.
func resourceForms(u string, out []string) []string {
	out = append(out, u)
	base := u
	if i := strings.IndexByte(base, '#'); i >= 0 {
		base = base[:i]
		out = append(out, base)
	}
	if i := strings.IndexByte(base, '?'); i >= 0 {
		base = base[:i]
		out = append(out, base)
	}
	// Only a path after the authority has a slash to toggle.
	if rest, ok := strings.CutPrefix(base[strings.IndexByte(base, ':')+1:], "//"); !ok || strings.IndexByte(rest, '/') >= 0 {
		if t, ok := strings.CutSuffix(base, "/"); ok {
			if !strings.HasSuffix(t, "/") && !strings.HasSuffix(t, ":") {
				out = append(out, t)
			}
		} else {
			out = append(out, base+"/")
		}
	}
	return out
}

// uriFold returns the case fold of a canonical URI (or URI glob): its
// percent-encoded UTF-8 is decoded, so that "%C3%89" and "%C3%A9" (É and é)
// fold together, and every rune is replaced by the smallest rune of its
// Unicode simple-fold orbit (mcpwire.Fold). Other percent-encoded octets
// stay encoded: they are reserved characters or the result is not UTF-8.
func uriFold(s string) string {
	if strings.IndexByte(s, '%') >= 0 {
		s = decodeNonASCII(s)
	}
	return mcpwire.Fold(s)
}

// mayMatchExpansion reports whether some string starting with prefix could
// be matched by the list: an include agrees with prefix, and no exclude
// covers every such string (an exclude ending in '*' that matches prefix
// itself does).
func (l *globList) mayMatchExpansion(prefix string) bool {
	if l == nil {
		return false
	}
	hit := false
	for i := range l.incl {
		if matchGlobPrefix(l.incl[i].pat, prefix) {
			hit = true
			break
		}
	}
	if !hit {
		return false
	}
	if l.foldExcl {
		prefix = uriFold(prefix)
	}
	for i := range l.excl {
		e := &l.excl[i]
		if strings.HasSuffix(e.pat, "*") && e.match(prefix) {
			return false
		}
	}
	return true
}

var (
	errGlobEmpty    = errors.New("empty entry")
	errGlobBang     = errors.New(`"!" must be followed by a pattern`)
	errGlobDouble   = errors.New(`"!!" is not allowed`)
	errGlobChar     = errors.New("control characters, invalid UTF-8 and surrounding spaces are not allowed")
	errGlobOnlyExcl = errors.New(`a list of only '!' entries matches nothing; add "*" to exclude from everything`)
)

// checkGlob validates one list entry.
func checkGlob(e string) error {
	switch {
	case e == "":
		return errGlobEmpty
	case e == "!":
		return errGlobBang
	case strings.HasPrefix(e, "!!"):
		return errGlobDouble
	case !utf8.ValidString(e) || strings.TrimSpace(e) != e:
		return errGlobChar
	}
	for i := 0; i < len(e); i++ {
		if e[i] < 0x20 || e[i] == 0x7f {
			return errGlobChar
		}
	}
	return nil
}

// newGlobList compiles validated entries; foldExcl makes excludes match
// without regard to case (for resources, see globList).
func newGlobList(entries []string, foldExcl bool) (*globList, error) {
	l := &globList{foldExcl: foldExcl}
	for _, e := range entries {
		if ex, ok := strings.CutPrefix(e, "!"); ok {
			if foldExcl {
				ex = uriFold(ex)
			}
			l.excl = append(l.excl, compileGlob(ex))
		} else {
			l.incl = append(l.incl, compileGlob(e))
		}
	}
	if len(l.incl) == 0 && len(l.excl) > 0 {
		return nil, errGlobOnlyExcl
	}
	return l, nil
}
