package modelgw

import (
	"errors"
)

// Errors returned by New and Serve; match them with errors.Is.
var (
	// ErrConfig: the configuration is incomplete or invalid.
	ErrConfig = errors.New("invalid model gateway configuration")
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("model gateway already serving")
	// ErrLimitStore: the limit counters log cannot be read or written, or
	// the gateway was closed.
	ErrLimitStore = errors.New("limit counters store failed")
)
