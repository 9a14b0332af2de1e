package cli

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

func TestAdminCommandSucceedsWithTheFirstCoordinatorDownAndNamesEveryOneWhenAllAre(t *testing.T) {
	d, _ := startTestMesh(t)
	admin := d.Coordinator.AdminDir()
	live := d.Coordinator.URL()
	dead := coordinatortest.JoinedThroughDead(t, admin, live)

	code, out, errOut := run(t, nil, "nodes", "list", "--state", admin)
	if code != 0 || !strings.Contains(out, "teller") {
		t.Fatalf("nodes list with the first coordinator down: exit %d\n%s%s", code, out, errOut)
	}

	d.Coordinator.Close()
	code, _, errOut = run(t, nil, "nodes", "list", "--state", admin)
	if code != 1 || !strings.Contains(errOut, "tried 2 coordinators") ||
		!strings.Contains(errOut, dead+" (connection refused)") || !strings.Contains(errOut, live+" (connection refused)") {
		t.Fatalf("nodes list with every coordinator down: exit %d, want 1 and an error naming both and why:\n%s", code, errOut)
	}
}

func TestStatusNamesTheCoordinatorItTalksToAndTheOthers(t *testing.T) {
	d, _ := startTestMesh(t)
	dir := filepath.Join(d.Dir, "teller")
	live := d.Coordinator.URL()
	dead := coordinatortest.JoinedThroughDead(t, dir, live)

	code, out, _ := run(t, nil, "status", "--state", dir)
	if code != 0 || !strings.Contains(out, "coordinator:  "+live+", reachable") || !strings.Contains(out, "failover:     "+dead+" ") {
		t.Fatalf("status with the joined coordinator down: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, nil, "status", "--state", dir, "--json")
	var st engine.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	if st.Coordinator != live || !slices.Equal(st.Coordinators, netmap.SortCoordinators([]string{dead, live})) {
		t.Fatalf("status --json: coordinator %s of %q; want %s of both", st.Coordinator, st.Coordinators, live)
	}
}

func TestJoinTriesTheCoordinatorsGivenBeforeTheKeys(t *testing.T) {
	d, _ := startTestMesh(t)
	admin := d.Coordinator.AdminDir()
	code, key, errOut := run(t, nil, "keys", "create", "--kind", "agent", "--state", admin)
	if code != 0 {
		t.Fatalf("keys create: exit %d\n%s", code, errOut)
	}
	dead := coordinatortest.DeadURL(t)
	dir := filepath.Join(t.TempDir(), "scout")
	code, out, errOut := run(t, nil, "join", "--authkey", strings.TrimSpace(key), "--name", "scout", "--state", dir,
		"--coordinator", dead+", "+dead)
	if code != 0 || !strings.Contains(out, "joined as") {
		t.Fatalf("join with the given coordinator down: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = run(t, nil, "join", "--authkey", strings.TrimSpace(key), "--name", "scout2", "--state", filepath.Join(t.TempDir(), "s2"),
		"--coordinator", "http://"+strings.TrimPrefix(dead, "https://"))
	if code == 0 || !strings.Contains(errOut, "is not https://HOST:PORT") {
		t.Fatalf("join --coordinator http://...: exit %d, want the URL refused\n%s", code, errOut)
	}
}
