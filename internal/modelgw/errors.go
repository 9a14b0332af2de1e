package modelgw

import (
	"errors"

	"agentmesh/internal/loopback"
)

// Errors returned by New, NewLocal and Serve; match them with errors.Is.
var (
	// ErrConfig: the configuration is incomplete or invalid.
	ErrConfig = errors.New("invalid model gateway configuration")
	// ErrServing: Serve was called twice.
	ErrServing = errors.New("model gateway already serving")
	// ErrLimitStore: the limit counters file cannot be read or written.
	ErrLimitStore = errors.New("limit counters store failed")
	// ErrNotLoopback: Local was asked to serve on a non-loopback address.
	ErrNotLoopback = loopback.ErrNotLoopback
	// ErrNoToken: Local was asked to serve TCP without a token or an
	// explicit opt-out.
	ErrNoToken = loopback.ErrNoToken
)
