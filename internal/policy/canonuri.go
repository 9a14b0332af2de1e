package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Resource URIs are matched in one canonical form. A glob is a string match
// and the gateway forwards the URI exactly as the client spelled it, so a
// spelling that the upstream resolves to the same resource but that reads
// differently ("FILE:///public/./secret", "file:///public//secr%65t") would
// slip past an exclusion such as "!file:///public/secret*". Rather than
// guess how each upstream resolves a spelling, the policy accepts a URI only
// when it is already in canonical form, and refuses every other spelling
// (reason noncanonical_uri); resource globs must be canonical too, or the
// policy does not compile. The canonical form is RFC 3986 section 6.2.2 and
// 6.2.3 normalisation, made stricter where real servers are looser than the
// RFC:
//
//   - the scheme and a registered host name are lower case;
//   - percent-encoding uses upper-case hex, and an octet is encoded exactly
//     when it has to be: in the path every pchar (unreserved, sub-delims,
//     ':' and '@') is written raw, because file-like servers decode them
//     all; in the query and fragment, unreserved characters are written
//     raw and reserved ones are kept as sent, since there they can carry
//     meaning; anything else (space, '"', '<', '>', '\', '^', '`', '{',
//     '|', '}', controls, non-ASCII) is encoded;
//   - percent-encoded octets above 0x7F decode to valid UTF-8 in Unicode
//     normalisation form C (macOS file systems treat NFC and NFD names as
//     one file);
//   - the path has no "." or ".." segments, no empty segments ("//") and
//     no segment ending in '.' or a space (Windows drops those);
//   - the authority has no user information, no percent-encoding, no
//     trailing dot, no empty port and no default port (http 80, https 443,
//     ws 80, wss 443, ftp 21); a port has no leading zeros; a host whose
//     last label starts with a digit is a dotted-quad IPv4 address as
//     netip prints it (never 0x7f.1 or 2130706433); an IPv6 literal is in
//     RFC 5952 form without a zone; "file://localhost/" is "file:///";
//   - a file URI is written with "//" ("file:///x", never "file:/x" or
//     "file:x", which URL parsers read as the same file), and an http,
//     https, ws, wss or ftp URI without "//" has no canonical form;
//   - an http, https, ws or wss URI with an empty path has the path "/";
//   - an empty query or fragment ("x?" or "x#") is dropped.
//
// Case in paths is significant in URIs, so it is not folded here; instead,
// resource exclusions match without regard to case (see globList.foldExcl),
// so that a case-insensitive file system cannot read "SECRET" past
// "!file:///public/secret*". Likewise a trailing slash, a query and a
// fragment are part of the canonical form, and an exclusion also matches
// the URI without them, or with a trailing slash added (see
// resourceForms), because a file server resolving the URL's path reads
// "file:///public/secret/?x#y" as "/public/secret".
//
// What the canonical form cannot know is how an upstream maps a URI to a
// resource beyond RFC 3986 and the WHATWG URL parser: a server that strips
// ";params" from path segments, resolves symbolic links, or reads Windows
// short (8.3) names or alternate data streams can reach an excluded file
// under a spelling no string comparison sees. Exclusions are a guard on
// names, not on the server's file system.

var (
	errURINoScheme    = errors.New("not an absolute URI: it needs a scheme such as file: or https:")
	errURIUserinfo    = errors.New("user information (user@host) is not allowed in the authority")
	errURIHost        = errors.New("the host must be lower-case letters, digits, '-', '.', '_' or '~', an IPv4 address or a bracketed IPv6 address")
	errURIPort        = errors.New("the port must be a number from 1 to 65535")
	errURIPercent     = errors.New("'%' must be followed by two hex digits")
	errURIUTF8        = errors.New("percent-encoded octets must decode to valid UTF-8")
	errURINFC         = errors.New("the decoded text has no spelling in Unicode normalisation form C")
	errURISegmentEnd  = errors.New("a path segment must not end in '.' or a space")
	errURIControl     = errors.New("control characters are not allowed")
	errURIFilePort    = errors.New("a file: URI has no port")
	errURINoAuthority = errors.New("an http, https, ws, wss or ftp URI needs \"//\" and a host")
)

// URI component classes for percent-encoding decisions.
const (
	compPath = iota
	compQuery
)

// isUnreserved reports whether c is an RFC 3986 unreserved character.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isSubDelim reports whether c is an RFC 3986 sub-delim.
func isSubDelim(c byte) bool {
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
		return true
	}
	return false
}

// rawOK reports whether the octet c is written raw (never encoded) in the
// canonical form of component comp.
func rawOK(c byte, comp int) bool {
	if isUnreserved(c) || isSubDelim(c) || c == ':' || c == '@' || c == '/' {
		return true
	}
	return comp == compQuery && c == '?'
}

// decodeOK reports whether an encoded octet c is decoded in the canonical
// form of comp: in the path every pchar, in the query and fragment only
// unreserved characters.
func decodeOK(c byte, comp int) bool {
	if comp == compPath {
		return c != '/' && rawOK(c, compPath)
	}
	return isUnreserved(c)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const upperHex = "0123456789ABCDEF"

// canonicalComponent returns the canonical spelling of a path, query or
// fragment s. The decoded text (with encoded octets of reserved characters
// left encoded) must be valid UTF-8 in NFC.
func canonicalComponent(s string, comp int) (string, error) {
	return canonicalComponentNFC(s, comp, true)
}

// canonicalComponentNFC is canonicalComponent; normalize says whether text
// that is not in NFC may be normalised once. The NFC form of the decoded
// text cannot always be spelled: a reserved character kept encoded
// ("%3D" in a query) followed by a combining mark (U+0338) composes to
// another character ('≠') only once decoded, so normalising the spelling
// changes nothing. Such text has no canonical form, rather than being
// normalised again and again (which recursed until the stack ran out).
func canonicalComponentNFC(s string, comp int, normalize bool) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	var text []byte // decoded octets above 0x7F and raw non-ASCII, for the UTF-8 and NFC check
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", errURIPercent
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", errURIPercent
			}
			i += 2
			o := hi<<4 | lo
			if o < 0x80 && decodeOK(o, comp) {
				b.WriteByte(o)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex[o>>4])
				b.WriteByte(upperHex[o&0xf])
			}
			text = append(text, o)
		case c < 0x20 || c == 0x7f:
			return "", errURIControl
		case c >= 0x80:
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&0xf])
			text = append(text, c)
		case rawOK(c, comp):
			b.WriteByte(c)
			text = append(text, c)
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&0xf])
			text = append(text, c)
		}
	}
	if !utf8.Valid(text) {
		return "", errURIUTF8
	}
	out := b.String()
	if !norm.NFC.IsNormal(text) {
		if !normalize {
			return "", errURINFC
		}
		// Re-encode the NFC form: ASCII keeps the spelling just built.
		return canonicalComponentNFC(norm.NFC.String(decodeNonASCII(out)), comp, false)
	}
	return out, nil
}

// decodeNonASCII decodes the percent-encoded octets of s above 0x7F when
// they form valid UTF-8, leaving everything else as it is.
func decodeNonASCII(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if o := hi<<4 | lo; ok1 && ok2 && o >= 0x80 {
				b = append(b, o)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	if !utf8.Valid(b) {
		return s
	}
	return string(b)
}

// defaultPorts are the ports RFC 3986 section 6.2.3 normalisation drops.
var defaultPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}

// canonicalAuthority returns the canonical authority (host and port) of a
// URI with the given lower-case scheme.
func canonicalAuthority(auth, scheme string) (string, error) {
	if strings.ContainsRune(auth, '@') {
		return "", errURIUserinfo
	}
	host, port := auth, ""
	if strings.HasPrefix(auth, "[") {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return "", errURIHost
		}
		host, port = auth[:end+1], auth[end+1:]
		if port != "" && port[0] != ':' {
			return "", errURIHost
		}
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", errURIHost
		}
		host = "[" + a.String() + "]"
	} else {
		if i := strings.LastIndexByte(auth, ':'); i >= 0 {
			host, port = auth[:i], auth[i:]
		}
		var err error
		if host, err = canonicalHost(host); err != nil {
			return "", err
		}
	}
	if port != "" {
		port = port[1:] // ':'
		if port != "" {
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil || n == 0 || strings.TrimLeft(port, "0123456789") != "" {
				return "", errURIPort
			}
			port = strconv.FormatUint(n, 10)
			if port == defaultPorts[scheme] {
				port = ""
			}
		}
	}
	if scheme == "file" {
		if port != "" {
			return "", errURIFilePort
		}
		if host == "localhost" {
			host = ""
		}
	}
	if port != "" {
		return host + ":" + port, nil
	}
	return host, nil
}

// canonicalHost returns the canonical registered name or IPv4 address h.
func canonicalHost(h string) (string, error) {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "", nil
	}
	var b strings.Builder
	b.Grow(len(h))
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
		default:
			return "", errURIHost
		}
		b.WriteByte(c)
	}
	h = b.String()
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" {
			return "", errURIHost
		}
	}
	// WHATWG URL parsers (and inet_aton) read a host whose last label
	// starts with a digit as an IPv4 address in any of several spellings.
	if last := labels[len(labels)-1]; last[0] >= '0' && last[0] <= '9' {
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is4() {
			return "", errURIHost
		}
		return a.String(), nil
	}
	return h, nil
}

// canonicalPath returns the canonical form of an already component-canonical
// path: dot segments removed, empty segments dropped, and no segment ending
// in '.' or a space.
func canonicalPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	abs := p[0] == '/'
	var out []string
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		if strings.HasSuffix(seg, ".") || strings.HasSuffix(seg, "%20") {
			return "", errURISegmentEnd
		}
		out = append(out, seg)
	}
	s := strings.Join(out, "/")
	if abs {
		s = "/" + s
	}
	// A directory is written with its trailing slash when it had one.
	if last := p[len(p)-1]; last == '/' && s != "/" && s != "" {
		s += "/"
	} else if len(out) > 0 && (strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")) {
		s += "/"
	}
	return s, nil
}

// canonicalURI returns the canonical spelling of the absolute URI u, or an
// error when u has none (see the comment at the top of this file).
func canonicalURI(u string) (string, error) {
	colon := strings.IndexByte(u, ':')
	if colon <= 0 || !validScheme(u[:colon]) {
		return "", errURINoScheme
	}
	scheme := strings.ToLower(u[:colon])
	rest := u[colon+1:]
	rest, frag, _ := strings.Cut(rest, "#")
	rest, query, _ := strings.Cut(rest, "?")
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteByte(':')
	path := rest
	hasAuth := strings.HasPrefix(rest, "//")
	if !hasAuth && specialScheme(scheme) {
		// WHATWG URL parsers (browsers, Node's URL, which file servers
		// use) read "file:/x" and "file:x" as "file:///x", and
		// "http:/host/x" as "http://host/x": without "//" these
		// schemes still have an authority, so the spelling without it
		// is not canonical.
		if scheme != "file" {
			return "", errURINoAuthority
		}
		rest = "///" + strings.TrimPrefix(rest, "/")
		path, hasAuth = rest, true
	}
	if hasAuth {
		auth := rest[2:]
		path = ""
		if i := strings.IndexByte(auth, '/'); i >= 0 {
			auth, path = auth[:i], auth[i:]
		}
		a, err := canonicalAuthority(auth, scheme)
		if err != nil {
			return "", err
		}
		b.WriteString("//")
		b.WriteString(a)
	}
	p, err := canonicalComponent(path, compPath)
	if err != nil {
		return "", err
	}
	if p, err = canonicalPath(p); err != nil {
		return "", err
	}
	if p == "" && hasAuth {
		if _, web := defaultPorts[scheme]; web && scheme != "ftp" {
			p = "/"
		}
	}
	b.WriteString(p)
	for _, part := range [...]struct {
		delim byte
		s     string
	}{{'?', query}, {'#', frag}} {
		if part.s == "" {
			continue // also an empty "?" or "#": dropped
		}
		c, err := canonicalComponent(part.s, compQuery)
		if err != nil {
			return "", err
		}
		b.WriteByte(part.delim)
		b.WriteString(c)
	}
	return b.String(), nil
}

// specialScheme reports whether scheme is one the WHATWG URL standard gives
// an authority however many slashes follow the colon.
func specialScheme(scheme string) bool {
	_, web := defaultPorts[scheme]
	return web || scheme == "file"
}

// validScheme reports whether s is an RFC 3986 scheme.
func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// isCanonicalURI reports whether u is a resource URI in canonical form.
func isCanonicalURI(u string) bool {
	c, err := canonicalURI(u)
	return err == nil && c == u
}

// templatePlaceholder stands for a template expression or a glob wildcard
// while the literal text around it is checked: an unreserved letter, valid
// in every component and never part of a dot segment.
const templatePlaceholder = "x"

// substituteTemplate replaces every RFC 6570 expression "{...}" of the URI
// template t with the placeholder. It fails on unbalanced or nested braces,
// an empty expression, or an expression holding anything but an operator,
// variable names, ',' and the ':N' and '*' modifiers.
func substituteTemplate(t string) (string, bool) {
	var b strings.Builder
	for {
		open := strings.IndexAny(t, "{}")
		if open < 0 {
			b.WriteString(t)
			return b.String(), true
		}
		if t[open] == '}' {
			return "", false
		}
		end := strings.IndexAny(t[open+1:], "{}")
		if end < 0 || t[open+1+end] != '}' || !validExpression(t[open+1:open+1+end]) {
			return "", false
		}
		b.WriteString(t[:open])
		b.WriteString(templatePlaceholder)
		t = t[open+1+end+1:]
	}
}

func validExpression(e string) bool {
	if e == "" {
		return false
	}
	if strings.IndexByte("+#./;?&=,!@|", e[0]) >= 0 {
		e = e[1:]
	}
	if e == "" {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == ',' || c == ':' || c == '*' || c == '%') {
			return false
		}
	}
	return true
}

// isCanonicalTemplate reports whether the literal text of the URI template
// t is in canonical form, its expressions standing for one letter each.
func isCanonicalTemplate(t string) bool {
	s, ok := substituteTemplate(t)
	return ok && !unsafeURI(s) && isCanonicalURI(s)
}

// Glob wildcards stand for these markers while a resource glob is checked:
// unreserved text, valid in a host and in every path, query and fragment
// position, left alone by canonicalisation, and mapped back for the
// suggestion in an error.
const (
	starMarker  = "~w0~"
	questMarker = "~w1~"
)

var (
	markWildcards   = strings.NewReplacer("*", starMarker, "?", questMarker)
	unmarkWildcards = strings.NewReplacer(starMarker, "*", questMarker, "?")
)

// checkResourceGlob checks that a resource glob (without its '!') is written
// in canonical form. Where a wildcard makes a part unknowable, that part is
// checked only as far as its literal text allows: a glob that starts with a
// wildcard before any "://" (such as "*secret*") is checked as a path; a
// wildcard in the scheme or the authority ("*://host/x",
// "https://*.example.com/*", "http://host:*/x") leaves that part to a
// character check (lower case, no '@' or '%').
func checkResourceGlob(g string) error {
	if strings.Trim(g, "*?") == "" {
		return nil // only wildcards
	}
	s := markWildcards.Replace(g)
	if unsafeURI(s) {
		return errors.New("it has a dot-dot segment, a control character, a percent-encoded '/', '.', '\\' or control character, or a doubly encoded octet; such URIs are always refused")
	}
	scheme, rest, hasColon := strings.Cut(g, ":")
	if !hasColon || strings.ContainsAny(scheme, "*?") && !strings.HasPrefix(rest, "//") {
		c, err := canonicalComponent(s, compPath)
		if err == nil {
			c, err = canonicalPath(c)
		}
		if err == nil && c != s {
			err = fmt.Errorf("write it as %q", unmarkWildcards.Replace(c))
		}
		if err != nil {
			return fmt.Errorf("not in canonical form: %w", err)
		}
		return nil
	}
	// Stand-ins for a wildcard scheme or authority, put back into the
	// suggestion.
	schemeOut, authOut := "", ""
	if strings.ContainsAny(scheme, "*?") {
		if strings.ToLower(scheme) != scheme {
			return fmt.Errorf("not a canonical resource URI: the scheme must be lower case")
		}
		schemeOut = scheme
		s = "x" + s[len(markWildcards.Replace(scheme)):]
	}
	if strings.HasPrefix(rest, "//") {
		auth := rest[2:]
		if i := strings.IndexAny(auth, "/?#"); i >= 0 && auth[i] == '/' {
			auth = auth[:i]
		} else if i >= 0 {
			// A '?' here is a wildcard, not a query: the authority
			// runs to the first '/'.
			auth, _, _ = strings.Cut(auth, "/")
		}
		if strings.ContainsAny(auth, "*?") {
			if strings.ContainsAny(auth, "@%") || strings.ToLower(auth) != auth || strings.HasSuffix(auth, ".") {
				return fmt.Errorf("not a canonical resource URI: %w", errURIHost)
			}
			authOut = auth
			at := strings.Index(s, "//") + 2
			s = s[:at] + "x" + s[at+len(markWildcards.Replace(auth)):]
		}
	}
	c, err := canonicalURI(s)
	if err != nil {
		return fmt.Errorf("not a canonical resource URI: %w", err)
	}
	// A glob ending in a wildcard may stand for the "/" that canonical
	// form adds to an http URI with an empty path.
	if c == s || c == s+"/" && strings.ContainsAny(g[len(g)-1:], "*?") {
		return nil
	}
	if authOut != "" {
		at := strings.Index(c, "//") + 2
		c = c[:at] + authOut + c[at+1:]
	}
	if schemeOut != "" {
		c = schemeOut + c[1:]
	}
	return fmt.Errorf("not in canonical form (resource URIs are matched only in canonical form): write it as %q", unmarkWildcards.Replace(c))
}
