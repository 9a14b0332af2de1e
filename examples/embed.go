// Package examples holds agentmesh's commented, working example
// configurations. They are embedded so that 'agentmesh demo' runs from any
// directory, and loaded by this package's tests so they never go stale.
package examples

import _ "embed"

// Policy is examples/policy.hujson.
//
//go:embed policy.hujson
var Policy []byte

// QuickstartPolicy is examples/quickstart-policy.hujson: the README
// quickstart's policy for the filesystem MCP server.
//
//go:embed quickstart-policy.hujson
var QuickstartPolicy []byte

// TailnetPolicy is examples/tailnet-policy.hujson: a tailnet policy file
// whose grants carry agentmesh rules in the app capability.
//
//go:embed tailnet-policy.hujson
var TailnetPolicy []byte

// TailnetMeshPolicy is examples/tailnet-mesh-policy.hujson: an agentmesh
// policy for tailnet callers.
//
//go:embed tailnet-mesh-policy.hujson
var TailnetMeshPolicy []byte
