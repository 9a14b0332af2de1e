package modelgw

import (
	"errors"

	"agentmesh/internal/gateway"
)

// Reason codes of the model gateway's refusals. Admission codes
// (no_certificate, unknown_peer, revoked, no_grant, ...) are the gateway
// package's; policy denials carry the policy's codes (not_granted,
// when_false, ...).
const (
	// The gateway package's codes, for the same conditions here: a body
	// that is not one strict JSON object with a string model (400), a body
	// over MaxBodyBytes (413), an upstream that failed (502), an allowed
	// answer whose audit event could not be recorded (503).
	ReasonMalformed   = gateway.ReasonMalformed
	ReasonTooLarge    = gateway.ReasonTooLarge
	ReasonUpstream    = gateway.ReasonUpstream
	ReasonAuditFailed = gateway.ReasonAuditFailed
	// Also the gateway package's: a body that does not fit in the
	// caller's or the gateway's body budget (429 or 503), a body that did
	// not arrive within the deadline (408).
	ReasonOverBudget  = gateway.ReasonOverBudget
	ReasonBodyTimeout = gateway.ReasonBodyTimeout
	// ReasonTooManyRequests: the caller already has
	// Config.MaxRequestsPerPeer requests in flight (429).
	ReasonTooManyRequests = gateway.ReasonTooManyRequests
	// ReasonBadPath: the URL path is not canonical (percent-encoding, dot
	// or empty segments, trailing slash).
	ReasonBadPath = "bad_path"
	// ReasonRateLimited: the source went over a limit's requests per minute.
	ReasonRateLimited = "limit_rpm"
	// ReasonTokenLimit: the source used up a limit's tokens per day.
	ReasonTokenLimit = "limit_tokens"
	// ReasonLimitStore: the limit counters cannot be counted (table full or
	// store failing), so a limit that applies cannot be enforced.
	ReasonLimitStore = "limits_unavailable"
	// ReasonUsageRequired: a streamed chat or text completion under a
	// tokens_per_day limit did not set stream_options.include_usage, so
	// its tokens could not be counted (403).
	ReasonUsageRequired = "usage_required"
)

// Errors returned by New and Serve; match them with errors.Is.
var (
	// ErrConfig: the configuration is incomplete or invalid.
	ErrConfig = errors.New("invalid model gateway configuration")
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("model gateway already serving")
	// ErrLimitStore: the limit counters file cannot be read or written.
	ErrLimitStore = errors.New("limit counters store failed")
)
