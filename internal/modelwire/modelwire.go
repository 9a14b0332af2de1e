// Package modelwire holds the wire shapes of the OpenAI-compatible model
// API that both sides of a model endpoint write: the model gateway
// (package modelgw) and the agent's local endpoint (package
// connector/modelconn) answer every refusal with the same error body, so
// that an unmodified OpenAI client surfaces it as an API error with a
// stable reason code.
package modelwire

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// ErrorBody is the JSON body of every refusal, in the shape OpenAI clients
// read (error.type, error.code, error.message) plus the reason code and the
// id of the audit event that recorded the refusal.
type ErrorBody struct {
	Error      ErrorDetail `json:"error"`
	Reason     reason.Code `json:"reason"`
	AuditEvent string      `json:"audit_event,omitempty"`
}

// ErrorDetail is the "error" object of ErrorBody.
type ErrorDetail struct {
	// Type is permission_denied (403), rate_limit_exceeded (429),
	// invalid_request_error (400, 408, 413), api_error (502, 503) or, from
	// the local endpoint, authentication_error (401).
	Type    string      `json:"type"`
	Code    reason.Code `json:"code"`
	Message string      `json:"message"`
	// AuditEvent repeats ErrorBody.AuditEvent inside the error object,
	// because SDKs (the openai package's APIError) expose only that object.
	AuditEvent string `json:"audit_event,omitempty"`
}

// WriteError answers with status and body as JSON.
func WriteError(w http.ResponseWriter, status int, body ErrorBody) {
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
