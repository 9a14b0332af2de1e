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
//	unsafe_uri    no     the resource URI has a dot-dot segment or a percent-encoded
//	                     '/', '.' or '\', which are refused rather than normalised
const (
	ReasonAllowed    Reason = "allowed"
	ReasonNoPolicy   Reason = "no_policy"
	ReasonNoGrant    Reason = "no_grant"
	ReasonNotGranted Reason = "not_granted"
	ReasonWhenFalse  Reason = "when_false"
	ReasonWhenError  Reason = "when_error"
	ReasonBadRequest Reason = "bad_request"
	ReasonUnsafeURI  Reason = "unsafe_uri"
)

// Reasons lists every reason code, in the order of the table above.
var Reasons = []Reason{
	ReasonAllowed, ReasonNoPolicy, ReasonNoGrant, ReasonNotGranted,
	ReasonWhenFalse, ReasonWhenError, ReasonBadRequest, ReasonUnsafeURI,
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
		return "the resource URI has a dot-dot segment or an encoded '/', '.' or '\\'"
	case "":
		return "no decision was made"
	}
	return "unknown reason"
}
