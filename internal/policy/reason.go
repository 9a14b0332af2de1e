package policy

// The reason codes a Decision carries. They are stable: the gateway puts them
// in JSON-RPC errors, the audit trail records them and metrics are labelled
// with them, so a code is never renamed or reused.
//
//	code          allow  meaning
//	allowed       yes    a grant linking src to dst covers the item (and its when held)
//	no_policy     no     there is no policy (nil *Policy): everything is denied
//	no_grant      no     no grant links src to dst at all
//	not_granted   no     src and dst are linked, but no grant's globs cover the item,
//	                     it is excluded by a '!' entry, or the grants are connection-only
//	when_false    no     a grant covers the item but its when evaluated to false
//	when_error    no     a grant covers the item but its when failed to evaluate
//	                     (missing argument, wrong type, cost limit): fail closed
//	bad_request   no     the request itself is invalid: zero Action, empty name,
//	                     invalid node kind or name
//	unsafe_uri    no     the resource URI has a dot-dot segment, a percent-encoded
//	                     '/', '.', '\' or control character, or a doubly encoded
//	                     octet, which are refused rather than normalised
//	noncanonical_uri no  the resource URI (or template) is not in canonical form
//	                     (scheme or host case, percent-encoding, "." or empty
//	                     segments, default port, ...): it is refused rather than
//	                     matched, since the gateway forwards it as spelled and
//	                     the server may resolve it to a resource a glob excludes
//	case_variant_key no  the arguments hold a key that differs only in case from
//	                     a key some when reads ("Max_Tokens" for max_tokens): a
//	                     case-insensitive upstream would bind what when never saw
const (
	ReasonAllowed    Reason = "allowed"
	ReasonNoPolicy   Reason = "no_policy"
	ReasonNoGrant    Reason = "no_grant"
	ReasonNotGranted Reason = "not_granted"
	ReasonWhenFalse  Reason = "when_false"
	ReasonWhenError  Reason = "when_error"
	ReasonBadRequest Reason = "bad_request"
	ReasonUnsafeURI  Reason = "unsafe_uri"
	// ReasonNonCanonicalURI: see the table above. It is a distinct code
	// from unsafe_uri because it has a remedy (send the canonical
	// spelling) where an unsafe URI has none, and the audit trail then
	// tells a client library's odd spelling from a traversal attempt.
	ReasonNonCanonicalURI Reason = "noncanonical_uri"
	ReasonCaseVariantKey  Reason = "case_variant_key"
)

// Reasons lists every reason code, in the order of the table above.
var Reasons = []Reason{
	ReasonAllowed, ReasonNoPolicy, ReasonNoGrant, ReasonNotGranted,
	ReasonWhenFalse, ReasonWhenError, ReasonBadRequest, ReasonUnsafeURI,
	ReasonNonCanonicalURI, ReasonCaseVariantKey,
}

// describe is the human sentence behind a reason code, for Explain.
func (r Reason) describe() string {
	switch r {
	case ReasonAllowed:
		return "a grant covers the request"
	case ReasonNoPolicy:
		return "there is no policy, so everything is denied"
	case ReasonNoGrant:
		return "no grant links the source to the destination"
	case ReasonNotGranted:
		return "the source may connect, but no grant covers this item (or a '!' entry excludes it)"
	case ReasonWhenFalse:
		return "a grant covers the item but its when condition is false"
	case ReasonWhenError:
		return "a grant covers the item but its when condition could not be evaluated"
	case ReasonBadRequest:
		return "the request is invalid"
	case ReasonUnsafeURI:
		return "the resource URI has a dot-dot segment, an encoded '/', '.', '\\' or control character, or a doubly encoded octet"
	case ReasonNonCanonicalURI:
		return "the resource URI is not in canonical form (resource URIs are matched only in canonical form)"
	case ReasonCaseVariantKey:
		return "an argument key differs only in case from a key a when condition reads"
	case "":
		return "no decision was made"
	}
	return "unknown reason"
}
