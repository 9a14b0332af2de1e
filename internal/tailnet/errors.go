package tailnet

import "errors"

// Sentinel errors.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("tailnet: invalid configuration")
	// ErrCapability reports a capability value that cannot become a policy.
	ErrCapability = errors.New("tailnet: invalid capability value")
)
