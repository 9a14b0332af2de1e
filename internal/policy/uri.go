package policy

import "strings"

// unsafeURI reports whether a resource URI must be refused rather than
// matched. A glob such as "file:///data/public/*" is a string match, and the
// server behind the gateway will resolve "file:///data/public/../secret"
// outside that directory; normalising here would only be safe if we
// normalised exactly as every server does. So a dot-dot segment, a
// percent-encoded '.', '/' or '\' (once or twice encoded), a backslash used
// as a separator before "..", and control characters are refused outright.
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

// encodedSeparator reports whether s (what follows a '%') encodes '.', '/'
// or '\', directly ("2e") or doubly encoded ("252e").
func encodedSeparator(s string) bool {
	if len(s) >= 4 && s[:2] == "25" {
		s = s[2:]
	}
	if len(s) < 2 {
		return false
	}
	switch strings.ToLower(s[:2]) {
	case "2e", "2f", "5c":
		return true
	}
	return false
}
