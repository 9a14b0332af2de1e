//go:build !notailnet

package engine

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/tailnet"
)

// TestTailnetNamesAreTheTailnetPackages: the engine documents the auth key
// variable and the capability without importing package tailnet (the lean
// build has none); they must be the names that package uses.
func TestTailnetNamesAreTheTailnetPackages(t *testing.T) {
	if TailnetAuthKeyEnv != tailnet.AuthKeyEnv || TailnetCapability != string(tailnet.CapabilityMCP) {
		t.Fatalf("engine says %s and %s, package tailnet %s and %s",
			TailnetAuthKeyEnv, TailnetCapability, tailnet.AuthKeyEnv, tailnet.CapabilityMCP)
	}
	for _, r := range []string{RulesAgentmesh, RulesTailnet} {
		if _, err := tailnet.ParseSource(r); err != nil {
			t.Fatalf("rules %q: %v", r, err)
		}
	}
}
