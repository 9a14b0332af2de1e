//go:build unix

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// TestDatabaseRestartUnderTraffic restarts PostgreSQL under two
// coordinator processes while an agent calls a tool through a gateway
// process: while it is down both coordinators say they are not ready, and
// the agent's calls are still answered (connector and gateway work from
// their cached netmaps; the gateway spools its decisions). Once it is
// back, the spooled decisions reach the trail on their own, each exactly
// once, and `audit verify` passes.
func TestDatabaseRestartUnderTraffic(t *testing.T) {
	requireE2E(t)
	srv := pgtest.Start(t)
	c := startCluster(t, srv.NewDatabase(t), 2)
	m := &mesh{t: t, dir: c.dir, admin: c.serving[0].AdminState}
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(everythingPolicy)
	upstream := []string{"node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio"}
	m.serve("everything", tool, upstream...)
	echo := func(msg string) step {
		return step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": msg}}
	}
	if got := texts(t, runClient(t, stdioClient("everything", agent, echo("warm-up"))).Results[0]); !strings.Contains(got, "warm-up") {
		t.Fatalf("echo returned %q", got)
	}

	srv.Stop()
	for _, s := range c.serving {
		if code := readyzOf(t, s.URL); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz of %s = %d with the database down, want 503", s.URL, code)
		}
	}
	const calls = 10
	var steps []step
	for i := range calls {
		steps = append(steps, echo("db-down-"+string(rune('a'+i))))
	}
	out := runClient(t, stdioClient("everything", agent, steps...))
	for i, r := range out.Results {
		if got := texts(t, r); !strings.Contains(got, "db-down-"+string(rune('a'+i))) {
			t.Fatalf("call %d with the database down returned %q", i, got)
		}
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.serving {
		if code := readyzOf(t, s.URL); code != http.StatusOK {
			t.Errorf("/readyz of %s = %d after the restart", s.URL, code)
		}
	}

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
		t.Fatalf("%d of %d allowed echo calls reached the trail after the restart: %v", seen, want, err)
	}
	f.stop(t)
	ids := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(m.must("audit", "--json", "--tool", "echo", "--decision", "allow", "--limit", "0", "--state", m.admin)), "\n") {
		var e event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit --json printed %q: %v", l, err)
		}
		if ids[e.ID] {
			t.Fatalf("event %s stored twice", e.ID)
		}
		ids[e.ID] = true
	}
	if len(ids) != want {
		t.Fatalf("%d allowed echo events in the trail, want %d", len(ids), want)
	}
	if out := m.must("audit", "verify", "--state", m.admin); !strings.Contains(out, "audit trail intact") {
		t.Fatalf("audit verify:\n%s", out)
	}
}

// readyzOf returns the status of a coordinator's /readyz, as a load
// balancer's health check reads it (no certificate check).
func readyzOf(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
