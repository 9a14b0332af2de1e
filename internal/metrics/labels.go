package metrics

import (
	"strings"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// methods are the label values of a request's method: the MCP methods and
// notifications a gateway knows, what it records for GET and DELETE
// streams and for responses, and the model API's routes. The audit event
// carries whatever a client sent; anything not listed is "other", so a
// client cannot make new series.
var methods = map[string]bool{}

func init() {
	for _, m := range []string{
		"initialize", "ping", "logging/setLevel", "server/discover",
		"tools/list", "tools/call", "prompts/list", "prompts/get",
		"resources/list", "resources/templates/list", "resources/read",
		"resources/subscribe", "resources/unsubscribe", "completion/complete",
		"subscriptions/listen", "tasks/list", "tasks/get", "tasks/result",
		"tasks/cancel", "tasks/update",
		"notifications/initialized", "notifications/cancelled", "notifications/progress",
		"notifications/roots/list_changed", "notifications/tasks/status",
		"response", "GET", "DELETE",
		"POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings",
		"POST /v1/responses", "GET /v1/models",
	} {
		methods[m] = true
	}
}

// methodLabel bounds a method to the known set.
func methodLabel(m string) string {
	switch {
	case methods[m]:
		return m
	case m == "":
		return "none"
	case strings.HasPrefix(m, "GET /v1/models/"):
		return "GET /v1/models/{id}"
	}
	return "other"
}

// reasonLabel is a reason code as a label; reason codes are the reason
// package's constants, set by agentmesh's own code, never by a peer.
func reasonLabel(c reason.Code) string {
	if c == "" {
		return "none"
	}
	return string(c)
}

// peerKind is the kind segment of a SPIFFE ID (spiffe://TD/KIND/NAME):
// agent, tool, model or admin. A source that is not a mesh identity (a
// tailnet caller) is "tailnet"; an empty one "none". It does not allocate.
func peerKind(src string) string {
	rest, ok := strings.CutPrefix(src, "spiffe://")
	if !ok {
		if src == "" {
			return "none"
		}
		return "tailnet"
	}
	_, rest, _ = strings.Cut(rest, "/")
	kind, _, _ := strings.Cut(rest, "/")
	switch kind {
	case "agent", "tool", "model", "admin":
		return kind
	}
	return "other"
}

// shadowLabel is a shadow decision as a label: allow, deny or error (the
// three values audit.ShadowDecision may hold), anything else "other".
func shadowLabel(d audit.Decision) string {
	switch d {
	case audit.Allow, audit.Deny, audit.ShadowError:
		return string(d)
	}
	return "other"
}
