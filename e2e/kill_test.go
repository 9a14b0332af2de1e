//go:build unix

package e2e

import (
	"encoding/json"
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

	const want = calls + 1
	f := startProc(t, "audit --follow", []string{agentmeshBin, "audit", "--follow", "--limit", "0", "--json", "--tool", "echo", "--state", m.admin}, m.env())
	seen := 0
	if _, err := f.waitLine(f.stdout, auditTimeout, func(l string) bool {
		var e event
		if json.Unmarshal([]byte(l), &e) == nil && e.Decision == "allow" && e.Src == "spiffe://agentmesh.local/agent/assistant" {
			seen++
		}
		return seen >= want
	}); err != nil {
		t.Fatalf("%d of %d allowed echo calls reached the coordinator: %v", seen, want, err)
	}
	f.stop(t)

	// Exactly once each: the gateway's restart re-ships what it cannot know
	// was stored, and the store keeps one row per event id.
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(m.must("audit", "--json", "--tool", "echo", "--decision", "allow", "--limit", "0", "--state", m.admin)), "\n") {
		var e event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit --json printed %q: %v", l, err)
		}
		if e.Src == "spiffe://agentmesh.local/agent/assistant" {
			n++
		}
	}
	if n != want {
		t.Fatalf("the trail holds %d allowed echo calls, want exactly %d", n, want)
	}
	m.verifyAudit()
}
