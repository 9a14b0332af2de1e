package policy

// unsafeURI reports whether a resource URI must be refused rather than
// matched, even in canonical form. A glob such as "file:///data/public/*" is
// a string match, and the server behind the gateway will resolve
// "file:///data/public/../secret" outside that directory; normalising here
// would only be safe if we normalised exactly as every server does. So a
// dot-dot segment, a percent-encoded '.', '/' or '\', a percent-encoded
// control character (C-string servers stop at "%00"), any doubly encoded
// octet ("%252e", which a server that decodes twice reads as '.'), a
// backslash used as a separator before "..", and control characters are
// refused outright. Spellings that RFC 3986 normalisation maps to one form
// are handled by the canonical form (see canonuri.go).
func unsafeURI(u string) bool {
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c < 0x20 || c == 0x7f {
			return true
		}
		if c == '%' && encodedSeparator(u[i+1:]) {
			return true
		}
		if c == '.' && i+1 < len(u) && u[i+1] == '.' {
			before := i == 0 || isSegmentEnd(u[i-1])
			after := i+2 == len(u) || isSegmentEnd(u[i+2])
			if before && after {
				return true
			}
		}
	}
	return false
}

// isSegmentEnd reports whether c can end a path segment for some server:
// slashes of either kind, and the delimiters of scheme, query and fragment.
func isSegmentEnd(c byte) bool {
	switch c {
	case '/', '\\', ':', '?', '#', '&', '=', ';':
		return true
	}
	return false
}

// encodedSeparator reports whether s (what follows a '%') is a doubly
// encoded octet ("25" and two hex digits) or encodes '.', '/', '\' or a
// control character.
func encodedSeparator(s string) bool {
	if len(s) < 2 {
		return false
	}
	hi, ok1 := unhex(s[0])
	lo, ok2 := unhex(s[1])
	if !ok1 || !ok2 {
		return false
	}
	if o := hi<<4 | lo; o == '.' || o == '/' || o == '\\' || o < 0x20 || o == 0x7f {
		return true
	}
	if s[:2] == "25" && len(s) >= 4 {
		_, ok1 = unhex(s[2])
		_, ok2 = unhex(s[3])
		return ok1 && ok2
	}
	return false
}
