package policy

import "github.com/agentmesh/agentmesh/internal/reason"

// Reasons lists every reason code a Decision may carry (see package
// reason for what each means).
var Reasons = []reason.Code{
	reason.Allowed, reason.NoPolicy, reason.NoGrant, reason.NotGranted,
	reason.WhenFalse, reason.WhenError, reason.BadRequest, reason.UnsafeURI,
	reason.NonCanonicalURI, reason.CaseVariantKey,
}

// describe is the human sentence behind a Decision's reason code, for
// Explain.
func describe(r reason.Code) string {
	switch r {
	case reason.Allowed:
		return "a grant covers the request"
	case reason.NoPolicy:
		return "there is no policy, so everything is denied"
	case reason.NoGrant:
		return "no grant links the source to the destination"
	case reason.NotGranted:
		return "the source may connect, but no grant covers this item (or a '!' entry excludes it)"
	case reason.WhenFalse:
		return "a grant covers the item but its when condition is false"
	case reason.WhenError:
		return "a grant covers the item but its when condition could not be evaluated"
	case reason.BadRequest:
		return "the request is invalid"
	case reason.UnsafeURI:
		return "the resource URI has a dot-dot segment, an encoded '/', '.', '\\' or control character, or a doubly encoded octet"
	case reason.NonCanonicalURI:
		return "the resource URI is not in canonical form (resource URIs are matched only in canonical form)"
	case reason.CaseVariantKey:
		return "an argument key differs only in case from a key a when condition reads"
	case "":
		return "no decision was made"
	}
	return "unknown reason"
}
