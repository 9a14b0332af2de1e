package gateway

import (
	"net/http"
	"strings"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

// isEventStream reports whether a response head h starts an event stream
// (SSE), whose time to first byte is measured instead of its total time.
func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	return len(ct) >= len(mcpwire.ContentTypeSSE) && strings.EqualFold(ct[:len(mcpwire.ContentTypeSSE)], mcpwire.ContentTypeSSE)
}
