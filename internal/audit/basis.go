package audit

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Basis is what a policy decision depended on that an event's other fields
// do not say: a gateway that asked the policy records it with the request
// event, so that the decision can be made again later (`agentmesh policy
// replay`) exactly as it was made, by the tags the registry gave the
// caller then rather than the tags it has now, and by the argument values
// the policy's when conditions read. It is part of the event, so the hash
// chain covers it like every other field. An event without a Basis (one
// recorded before gateways kept it, a denial made before the policy was
// asked) cannot be decided again.
//
// What of the arguments is kept is the policy's rule (policy.AuditArgs):
// only values at the paths its when conditions read, never keys named like
// secrets, and at most MaxBasisArgs bytes.
type Basis struct {
	// SrcTags and DstTags are the tags of the caller and of the deciding
	// node in the registry when the decision was made, sorted. A recorded
	// Basis always has both, empty ([]) for a node with no tags.
	SrcTags []string `json:"src_tags"`
	DstTags []string `json:"dst_tags"`
	// SrcUser is the caller's user as the policy saw it (policy.Node.User:
	// a tailnet caller's WhoIs login, a mesh node's registered owner), ""
	// for none; the event's User says the same for every event.
	SrcUser string `json:"src_user,omitempty"`
	// Method is the method the policy was asked about when it is not the
	// event's Method: a task method is decided as the request that created
	// the task, subscriptions/listen as resources/subscribe.
	Method string `json:"method,omitempty"`
	// Template says the event's Resource is a URI template (the reference
	// of completion/complete), decided as one.
	Template bool `json:"template,omitempty"`
	// HTTPMethod and Path are a model request's HTTP method and URL path.
	HTTPMethod string `json:"http_method,omitempty"`
	Path       string `json:"path,omitempty"`
	// ArgPaths lists the argument paths the recorder kept, dotted
	// ("amount", "opts.mode"), sorted, whether the request had them or not;
	// Args is a JSON object with the values the request had at those paths
	// (and, as null, any key spelled like a kept key in another case, so
	// that the case_variant_key refusal can be decided again). Both are
	// empty when the policy reads no argument.
	ArgPaths []string `json:"arg_paths,omitempty"`
	Args     string   `json:"args,omitempty"`
	// Unjudged, when not "", says why the decision cannot be made again from
	// this record although the policy was asked: BasisArgsOverLimit (the
	// kept values exceeded MaxBasisArgs and were dropped) or
	// BasisSeveralItems (one request decided several resources, such as a
	// subscriptions/listen, and the event names one).
	Unjudged string `json:"unjudged,omitempty"`
}

// Reasons a Basis cannot be replayed (Basis.Unjudged).
const (
	BasisArgsOverLimit = "args_over_limit"
	BasisSeveralItems  = "several_items"
	// BasisOverLimit: the basis would exceed its bounds (more than 64 tags
	// on a side or paths, or MaxBasisSize in all); only this reason is
	// recorded, so the event itself stays valid.
	BasisOverLimit = "basis_over_limit"
)

// MaxBasisSize bounds the text of a Basis in all.
const MaxBasisSize = 16 << 10

// MaxBasisArgs bounds Basis.Args: a request's kept argument values beyond
// it are not recorded (Basis.Unjudged is then BasisArgsOverLimit), so a
// caller cannot make one event large.
const MaxBasisArgs = 2 << 10

// maxBasisTags bounds the tags of one side of a Basis.
const maxBasisTags = 64

func appendBasis(dst []byte, b *Basis) []byte {
	dst = append(dst, `,"basis":{"src_tags":`...)
	dst = appendStrings(dst, b.SrcTags)
	dst = append(dst, `,"dst_tags":`...)
	dst = appendStrings(dst, b.DstTags)
	dst = appendField(dst, `,"src_user":`, b.SrcUser)
	dst = appendField(dst, `,"method":`, b.Method)
	if b.Template {
		dst = append(dst, `,"template":true`...)
	}
	dst = appendField(dst, `,"http_method":`, b.HTTPMethod)
	dst = appendField(dst, `,"path":`, b.Path)
	if len(b.ArgPaths) > 0 {
		dst = append(dst, `,"arg_paths":`...)
		dst = appendStrings(dst, b.ArgPaths)
	}
	dst = appendField(dst, `,"args":`, b.Args)
	dst = appendField(dst, `,"unjudged":`, b.Unjudged)
	return append(dst, '}')
}

// appendStrings encodes a string slice as encoding/json does: null for
// nil.
func appendStrings(dst []byte, ss []string) []byte {
	if ss == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, s)
	}
	return append(dst, ']')
}

// Check reports whether b may be recorded: a recorder that builds a
// Basis from what it cannot bound (a node's tags, a policy's paths) checks
// it and records BasisOverLimit instead of an event that would be refused.
func (b *Basis) Check() error {
	if p := b.problem(); p != "" {
		return fmt.Errorf("audit: %w: %s", ErrInvalidEvent, p)
	}
	return nil
}

// OverLimit is the Basis recorded instead of one that fails Check.
func OverLimit() *Basis {
	return &Basis{SrcTags: []string{}, DstTags: []string{}, Unjudged: BasisOverLimit}
}

// problem describes what is wrong with b, or returns "".
func (b *Basis) problem() string {
	if b.SrcTags == nil || b.DstTags == nil {
		return "basis without src_tags or dst_tags"
	}
	if len(b.SrcTags) > maxBasisTags || len(b.DstTags) > maxBasisTags || len(b.ArgPaths) > maxBasisTags {
		return "basis lists more than " + strconv.Itoa(maxBasisTags) + " tags or paths"
	}
	if len(b.Args) > MaxBasisArgs {
		return fmt.Sprintf("basis args longer than %d bytes", MaxBasisArgs)
	}
	total := 0
	for _, list := range [][]string{b.SrcTags, b.DstTags, b.ArgPaths, {b.SrcUser, b.Method, b.HTTPMethod, b.Path, b.Args, b.Unjudged}} {
		for _, s := range list {
			if total += len(s); total > MaxBasisSize {
				return fmt.Sprintf("basis longer than %d bytes", MaxBasisSize)
			}
			if len(s) > maxFieldLen {
				return fmt.Sprintf("basis field longer than %d bytes", maxFieldLen)
			}
			if !utf8.ValidString(s) {
				return "basis field is not valid UTF-8"
			}
		}
	}
	return ""
}
