// Package policy parses, compiles and evaluates agentmesh policy documents.
//
// A document is HuJSON with five top-level keys: groups, grants, limits,
// annotations (trusted tool classes, annotations.go) and tests. Grants carry tools, resources, prompts, models and paths (HTTP
// "METHOD /path" globs for model nodes); limits declare requests per minute
// and tokens per day for model requests (see Policy.Limits).
// An audit_args section adjusts which argument values the audit trail
// keeps for replay (auditargs.go: by default those the whens read, never
// secret-named keys).
// A tool_pins section pins tool servers' tool definitions by hash (the
// policy's tool lockfile, see pins.go and package toolpin); a test's
// tool_hashes makes its tools/call expectations check those pins.
// Compile turns it into an immutable *Policy; Decide answers one request;
// Visible answers what a source may see at a destination, for list filtering.
//
// Decoding is strict: unknown or duplicate keys, wrong JSON types, unknown
// selector kinds, malformed globs, cyclic or undefined groups and when
// expressions that do not compile to bool are errors naming line and column.
// Size limits (MaxDocumentBytes, MaxGrants, MaxGroups, MaxTests, MaxLimits,
// MaxDepth, MaxWhenBytes, MaxIndexEntries) bound the cost of compiling a
// hostile file.
//
// A when sees src, dst, method, tool, resource, prompt, model, path,
// http_method, args, on_behalf_of and delegation; for a model request args is the request's JSON body
// (args.max_tokens, args.stream), and path and http_method are its URL path
// and HTTP method. on_behalf_of is the e-mail address of the person a
// delegated request is made for ("" for none), delegation its user, chain
// and depth (delegation.go).
//
// A grant's on_behalf_of (user:EMAIL, group:NAME, *) limits it to requests
// made with a delegation from those people (Request.Delegation); a grant
// without one applies to every request, delegated or not.
//
// Selectors are agent:NAME, tool:NAME, model:NAME, tag:NAME, group:NAME, *
// and user:LOGIN; the last matches Node.User, the person behind a node:
// for a tailnet caller the login WhoIs reports for an untagged device (a
// tagged device belongs to the tailnet and has none); for a mesh node the
// owner the coordinator's registry recorded when a person joined it with
// `agentmesh join --sso`, carried in the netmap (a certificate names no
// user, and the peer's word is never taken). One call has at most one
// user, from its transport's authority: a certificate caller has no
// WhoIs, a tailnet caller no registry entry. A mesh node with an owner is
// known by both its kind:NAME and user:LOGIN (and its tags), so a grant
// to either reaches it. Logins are compared in lower case (ASCII only,
// identity.LowerLogin): a selector with an upper-case letter does not
// compile, callers' logins are folded when identified, and a Node whose
// User is not folded is denied everything. Groups may
// also list admin:NAME, for approval groups (approvals.go).
//
// Grants only add access. Decide looks grants up in an index built at
// compile time (destination key, then source key; keys are kind:name, tag,
// user and *, with groups expanded), so its cost does not grow with the number of
// grants. A connect is decided without evaluating when; every item on the
// connection is decided, with its when, on its own.
//
// Threat model: the policy is the only thing that allows traffic. It fails
// closed by construction: the zero Decision denies, a nil *Policy denies
// everything, grants can only add access, and a `when` condition that cannot
// be evaluated denies with its own reason code. Resource URIs with dot-dot
// segments or encoded separators are refused (unsafe_uri) rather than
// normalised, because a glob is a string match and the server resolves the
// path; every other URI must be in the canonical form of canonuri.go (RFC
// 3986 normalisation, made stricter), or it is refused (noncanonical_uri),
// and resource globs must be canonical to compile, so that no two spellings
// of one resource match differently; resource exclusions match regardless
// of case, and also the URI's trailing-slash, query-less and fragment-less
// forms, for servers that read those as the same resource. Arguments
// holding a key that differs only in case from a key read by the when of a
// grant that comes to decide the request are refused (case_variant_key):
// the projection of a policy for one gateway decides exactly as the whole
// policy does, since an upstream that binds keys
// case-insensitively would read what the when never saw (see ArgKeys).
// Node tags come from the registry through Request, never from the peer. A
// when runs under a CEL cost limit, so a request cannot make the gateway
// spin; a request whose every value the when reads is small enough that
// CEL's static cost estimate puts the limit out of reach runs without the
// runtime tracker, which then could not have stopped it (see whenProg).
package policy

import (
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// Node is the policy's view of one side of a request. Tags come from the
// coordinator's registry, never from the peer.
type Node struct {
	Name identity.Name
	Kind identity.Kind
	Tags []identity.Tag
	// User is the login of the human who owns the node, in lower case
	// (identity.LowerLogin): for a tailnet node as WhoIs reports it, for
	// a mesh node its registered owner (netmap.Node.Owner), such as
	// "alice@example.com"; it is matched by user:LOGIN selectors. Empty
	// matches no user: selector; one with an upper-case ASCII letter
	// makes the request invalid (denied).
	// A node with a User may have no Name (a person's tailnet device,
	// whose self-chosen name proves nothing): it then matches no
	// kind:NAME selector.
	User string
}

// Action says what a request wants to do at its destination.
type Action int

// The actions a request can carry. The zero Action is invalid and denied.
const (
	ActionInvalid  Action = iota
	ActionConnect         // admission: may Src connect to Dst at all
	ActionTool            // tools/call of Request.Tool
	ActionResource        // resources/read, resources/subscribe of Request.Resource
	ActionPrompt          // prompts/get of Request.Prompt
	ActionModel           // a model API request for Request.Model
	// ActionPath is an HTTP request to a model node that names no model
	// (GET /v1/models is filtered instead): allowed only when a grant's
	// paths list covers "HTTPMethod Path", such as "POST /v1/audio/speech".
	ActionPath
)

// Request is one question put to the policy.
type Request struct {
	Src, Dst Node
	Action   Action
	// Method is the MCP method or HTTP route that carried the request, as
	// `when` sees it ("tools/call", "resources/read", "/v1/chat/completions").
	Method   string
	Tool     string
	Resource string
	// Template says Resource is an RFC 6570 URI template (the ref/resource
	// of completion/complete) rather than a URI: its expressions are not
	// URI text, so only its literal text must be in canonical form.
	Template bool
	Prompt   string
	Model    string
	// HTTPMethod and Path are the HTTP method and URL path of a model API
	// request; `when` sees them as http_method and path. For ActionPath the
	// item matched against a grant's paths is HTTPMethod + " " + Path.
	HTTPMethod string
	Path       string
	// Args are the tool call's arguments (or the model request's fields), as
	// decoded by the strict decoder; `when` sees them as `args`.
	Args map[string]any
	// Delegation is the delegation the request is made with (the source
	// acts for a person), nil for none: grants with on_behalf_of apply
	// only to a request whose delegation's person they name, and a when
	// sees it as on_behalf_of and delegation.
	Delegation *Delegation
	// kept, set only by DecideRecorded, is the argument paths a record
	// kept: a when reading others is not evaluated (auditargs.go).
	kept *keptPaths
}

// Decision is the answer to a Request. The zero Decision denies.
type Decision struct {
	Allow bool
	// Reason says why, one of the policy codes of package reason
	// (reason.Allowed, reason.NoGrant, ...); the same code appears in
	// JSON-RPC errors, audit events and metrics.
	Reason reason.Code
	// Grant is the index in the document's grants of the grant that decided,
	// or -1 when no grant did.
	Grant   int
	Version string
	// When says whether a when condition took part: held for an allow by a
	// grant whose when held, false or error for a denial by one whose when
	// did not, none otherwise.
	When WhenResult
	// Approval, for an allow by a grant with an approval, is the group
	// ("group:oncall") one of whose members must approve the call before
	// it proceeds, and ApprovalTimeout how long it may wait (approvals.go).
	Approval        string
	ApprovalTimeout time.Duration
	// unjudged, only from DecideRecorded, says the answer depends on a
	// when that reads arguments the record did not keep.
	unjudged bool
}
