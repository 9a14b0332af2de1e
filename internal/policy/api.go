// Package policy parses, compiles and evaluates agentmesh policy documents.
//
// A document is HuJSON with three top-level keys: groups, grants and tests.
// Compile turns it into an immutable *Policy; Decide answers one request;
// Visible answers what a source may see at a destination, for list filtering.
//
// Threat model: the policy is the only thing that allows traffic. It fails
// closed by construction: the zero Decision denies, a nil *Policy denies
// everything, grants can only add access, and a `when` condition that cannot
// be evaluated denies with its own reason code.
package policy

import "agentmesh/internal/identity"

// Node is the policy's view of one side of a request. Tags come from the
// coordinator's registry, never from the peer.
type Node struct {
	Name identity.Name
	Kind identity.Kind
	Tags []identity.Tag
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
	Prompt   string
	Model    string
	// Args are the tool call's arguments (or the model request's fields), as
	// decoded by the strict decoder; `when` sees them as `args`.
	Args map[string]any
}

// Reason is a stable, documented code that says why a decision was made.
// The same code appears in JSON-RPC errors, audit events and metrics.
type Reason string

// Decision is the answer to a Request. The zero Decision denies.
type Decision struct {
	Allow  bool
	Reason Reason
	// Grant is the index in the document's grants of the grant that decided,
	// or -1 when no grant did.
	Grant   int
	Version string
	// When says whether a when condition took part: held for an allow by a
	// grant whose when held, false or error for a denial by one whose when
	// did not, none otherwise.
	When WhenResult
}
