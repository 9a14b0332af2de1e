//go:build unix

package e2e

import (
	"crypto/tls"
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

	m.awaitEchoesOnce("spiffe://agentmesh.local/agent/assistant", calls+1)
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
