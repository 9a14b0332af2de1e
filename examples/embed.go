// Package examples holds agentmesh's commented, working example
// configurations. They are embedded so that 'agentmesh demo' runs from any
// directory, and loaded by this package's tests so they never go stale.
package examples

import _ "embed"

// Policy is examples/policy.hujson.
//
//go:embed policy.hujson
var Policy []byte
