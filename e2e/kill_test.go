//go:build unix

package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestGatewayKilledBeforeShippingLosesNoEvent is the audit trail's promise
// under the worst timing: the coordinator is down, so nothing a gateway
// decides can be shipped; the gateway answers calls and is then killed
// with SIGKILL. After the coordinator and the gateway come back, the trail
// holds every answered call, exactly once, and verifies.
func TestGatewayKilledBeforeShippingLosesNoEvent(t *testing.T) {
	m := newMesh(t)
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(everythingPolicy)
	upstream := []string{"node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio"}
	gw := m.serve("everything", tool, upstream...)

	// One call while the coordinator is up, so the agent's cached netmap
	// knows where the gateway is.
	echo := func(msg string) step {
		return step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": msg}}
	}
	if got := texts(t, runClient(t, stdioClient("everything", agent, echo("warm-up"))).Results[0]); !strings.Contains(got, "warm-up") {
		t.Fatalf("echo returned %q", got)
	}

	m.stopCoordinator()
	const calls = 25
	var steps []step
	for i := range calls {
		steps = append(steps, echo("offline-"+string(rune('a'+i))))
	}
	out := runClient(t, stdioClient("everything", agent, steps...))
	for i, r := range out.Results {
		if got := texts(t, r); !strings.Contains(got, "offline-"+string(rune('a'+i))) {
			t.Fatalf("offline call %d returned %q", i, got)
		}
	}
	// Every call above was answered, so each decision is in the gateway's
	// spool; none can have been shipped. Kill the gateway and its upstream.
	if err := syscall.Kill(-gw.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-gw.exited

	m.startCoordinatorAgain()
	m.serve("everything", tool, upstream...)

	// Exactly once each: the gateway's restart re-ships what it cannot know
	// was stored, and the store keeps one row per event id.
	m.awaitEchoesOnce("spiffe://agentmesh.local/agent/assistant", calls+1)
	m.verifyAudit()
}
