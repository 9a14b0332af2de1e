package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/demo"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// statusJSON runs 'status --json' on the state directory dir and decodes it.
func statusJSON(t *testing.T, dir string) (int, engine.NodeStatus) {
	t.Helper()
	code, out, errOut := run(t, nil, "status", "--state", dir, "--json")
	var st engine.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: exit %d, %q %q: %v", code, out, errOut, err)
	}
	return code, st
}

// nodeInfo returns the coordinator's row for the active node name.
func nodeInfo(t *testing.T, ctx context.Context, d *demo.Mesh, name string) (controlapi.NodeInfo, bool) {
	t.Helper()
	var nodes []controlapi.NodeInfo
	if err := d.Admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == name && n.Status == "active" {
			return n, true
		}
	}
	return controlapi.NodeInfo{}, false
}

// waitRegistered waits until the coordinator lists an address for name,
// following its netmap version (every registration publishes a new one).
func waitRegistered(t *testing.T, ctx context.Context, d *demo.Mesh, name string) controlapi.NodeInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var since int64 = -1
	for {
		if n, ok := nodeInfo(t, ctx, d, name); ok && len(n.Addrs) > 0 {
			return n
		}
		nm, err := d.Admin.Netmap(ctx, since)
		if err != nil {
			t.Fatalf("waiting for %s to register: %v", name, err)
		}
		if nm != nil {
			since = nm.Version
		}
	}
}

// startToolGateway joins the tool node name and serves it in front of a
// ledger; stop ends the gateway and waits for it.
func startToolGateway(t *testing.T, ctx context.Context, d *demo.Mesh, name string) (stop func()) {
	t.Helper()
	if _, err := d.Join(ctx, name, "tool"); err != nil {
		t.Fatal(err)
	}
	up, err := d.StartLedger()
	if err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	ready := make(chan struct{}, 1)
	go func() {
		errc <- engine.ServeGateway(gctx, engine.GatewayConfig{State: filepath.Join(d.Dir, name), Listen: "127.0.0.1:0",
			UpstreamURL: up, Logger: d.Log, Ready: func(engine.Serving) { ready <- struct{}{} }})
	}()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("gateway %s: %v", name, err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-errc
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestStatusShowsTheGatewaysAddressAndWhetherItAnswers(t *testing.T) {
	d, ctx := startTestMesh(t)
	stop := startToolGateway(t, ctx, d, "pager")
	info := waitRegistered(t, ctx, d, "pager")
	dir := filepath.Join(d.Dir, "pager")

	// The registry holds the address a moment before the coordinator has
	// published the netmap that carries it (the register call answers
	// after both), and status reads the netmap: follow its versions until
	// the node's own view has the address.
	code, st := statusJSON(t, dir)
	for since := st.NetmapVersion; code == 0 && len(st.Addrs) == 0; {
		nm, err := d.Admin.Netmap(ctx, since)
		if err != nil {
			t.Fatalf("waiting for pager's netmap to carry its address: %v", err)
		}
		if nm != nil {
			since = nm.Version
		}
		code, st = statusJSON(t, dir)
	}
	if code != 0 || !st.OK || st.Serving == nil || !*st.Serving || !slices.Equal(st.Addrs, info.Addrs) {
		t.Fatalf("status of a serving gateway: exit %d, %+v (registered %v)", code, st, info.Addrs)
	}
	code, out, _ := run(t, nil, "status", "--state", dir)
	if code != 0 || !strings.Contains(out, "serving:      "+info.Addrs[0]+", answering") {
		t.Fatalf("status text of a serving gateway: exit %d\n%s", code, out)
	}

	// Stopped: the address is still registered, but nothing answers. The
	// node can still work (start it again), so the exit status stays 0.
	stop()
	code, st = statusJSON(t, dir)
	if code != 0 || st.Serving == nil || *st.Serving || st.ServingError == "" || !slices.Equal(st.Addrs, info.Addrs) {
		t.Fatalf("status of a stopped gateway: exit %d, %+v", code, st)
	}
	if _, out, _ := run(t, nil, "status", "--state", dir); !strings.Contains(out, "NOT ANSWERING") {
		t.Fatalf("status text of a stopped gateway:\n%s", out)
	}

	// An agent does not serve: no serving line, no serving field.
	if code, st := statusJSON(t, filepath.Join(d.Dir, "teller")); code != 0 || st.Serving != nil {
		t.Fatalf("status of an agent: exit %d, %+v", code, st)
	}
}

func TestStatusShowsTheNodesCurrentTagsNotAPredecessors(t *testing.T) {
	d, ctx := startTestMesh(t)
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	if code, _, errOut := run(t, env, "nodes", "tag", "auditor", "--tags", "tag:audit"); code != 0 {
		t.Fatalf("nodes tag: %d %s", code, errOut)
	}
	old := filepath.Join(d.Dir, "auditor")
	if code, st := statusJSON(t, old); code != 0 || !slices.Equal(st.Tags, []string{"tag:audit"}) {
		t.Fatalf("status after nodes tag: exit %d, tags %v", code, st.Tags)
	}
	if code, _, errOut := run(t, env, "nodes", "revoke", "auditor"); code != 0 {
		t.Fatalf("nodes revoke: %d %s", code, errOut)
	}
	// A successor of the same name, with other tags, in its own state.
	d.Dir = t.TempDir()
	if _, err := d.Join(ctx, "auditor", "agent", "tag:ops"); err != nil {
		t.Fatal(err)
	}
	code, st := statusJSON(t, filepath.Join(d.Dir, "auditor"))
	if code != 0 || !slices.Equal(st.Tags, []string{"tag:ops"}) {
		t.Fatalf("status of the successor: exit %d, tags %v, want [tag:ops]", code, st.Tags)
	}
	// The predecessor is revoked, and shows its own tags (from its cache),
	// never its successor's.
	code, st = statusJSON(t, old)
	if code != 1 || !st.Revoked || st.OK || slices.Contains(st.Tags, "tag:ops") {
		t.Fatalf("status of the revoked predecessor: exit %d, %+v", code, st)
	}
}

func TestStatusOfARevokedNodeSaysRevokedAndExitsOne(t *testing.T) {
	d, _ := startTestMesh(t)
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	if code, _, errOut := run(t, env, "nodes", "revoke", "teller"); code != 0 {
		t.Fatalf("nodes revoke: %d %s", code, errOut)
	}
	dir := filepath.Join(d.Dir, "teller")
	code, out, _ := run(t, nil, "status", "--state", dir)
	if code != 1 || !strings.Contains(out, "REVOKED") {
		t.Fatalf("status of a revoked node: exit %d\n%s", code, out)
	}
	for _, wrong := range []string{"valid until", "UNREACHABLE", "unreachable"} {
		if strings.Contains(out, wrong) {
			t.Errorf("status of a revoked node says %q:\n%s", wrong, out)
		}
	}
	code, st := statusJSON(t, dir)
	if code != 1 || !st.Revoked || st.OK || !st.CoordinatorReached || len(st.Problems) == 0 {
		t.Fatalf("status --json of a revoked node: exit %d, %+v", code, st)
	}
}

func TestStatusExitsOneWhenTheCoordinatorIsAwayBeyondTheCachesLife(t *testing.T) {
	d, _ := startTestMesh(t)
	dir := filepath.Join(d.Dir, "teller")
	if code, st := statusJSON(t, dir); code != 0 || !st.OK || !st.CoordinatorReached {
		t.Fatalf("status with the coordinator up: exit %d, %+v", code, st)
	}
	sd, err := nodestate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.SaveNetmapConfirmed(time.Now()); err != nil {
		t.Fatal(err)
	}
	d.Coordinator.Close()

	// Away, but the cache is fresh: the node works from it.
	code, out, _ := run(t, nil, "status", "--state", dir)
	if code != 0 || !strings.Contains(out, "UNREACHABLE") || strings.Contains(out, "STALE") {
		t.Fatalf("status with the coordinator away and a fresh cache: exit %d\n%s", code, out)
	}
	// Away for longer than a certificate lifetime: it cannot work.
	if err := sd.SaveNetmapConfirmed(time.Now().Add(-30 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, st := statusJSON(t, dir)
	if code != 1 || st.OK || st.CoordinatorReached || !st.NetmapStale || st.Revoked || len(st.Problems) != 1 {
		t.Fatalf("status with the coordinator away beyond the cache's life: exit %d, %+v", code, st)
	}
}

func TestStatusHelpDocumentsTheExitStatus(t *testing.T) {
	code, out, _ := run(t, nil, "status", "--help")
	if code != 0 || !strings.Contains(out, "Exit status:") || !strings.Contains(out, "1  the node cannot work") {
		t.Fatalf("status --help: %d\n%s", code, out)
	}
}

func TestNodesListShowsIDsHidesRevokedAndAStoppedGatewayAsNotServing(t *testing.T) {
	clock := pkitest.NewClock(time.Now())
	const longPoll = time.Second
	d, ctx := startTestMeshWith(t, func(c *coordinator.Config) { c.Now, c.LongPoll = clock.Now, longPoll })
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	stop := startToolGateway(t, ctx, d, "pager")
	waitRegistered(t, ctx, d, "pager")
	if code, _, errOut := run(t, env, "nodes", "revoke", "auditor"); code != 0 {
		t.Fatalf("nodes revoke: %d %s", code, errOut)
	}
	list := func(args ...string) map[string]controlapi.NodeInfo {
		t.Helper()
		code, out, errOut := run(t, env, append([]string{"nodes", "list", "--json"}, args...)...)
		var nodes []controlapi.NodeInfo
		if code != 0 || json.Unmarshal([]byte(out), &nodes) != nil {
			t.Fatalf("nodes list --json: %d %q %q", code, out, errOut)
		}
		byName := map[string]controlapi.NodeInfo{}
		for _, n := range nodes {
			byName[n.Name] = n
		}
		return byName
	}
	nodes := list()
	if _, ok := nodes["auditor"]; ok {
		t.Errorf("nodes list shows the revoked auditor without --all")
	}
	if n := nodes["pager"]; !n.Serving || len(n.Addrs) == 0 {
		t.Errorf("a running gateway: %+v, want serving", n)
	}
	if n := nodes["teller"]; n.Serving || n.ID != "spiffe://agentmesh.local/agent/teller" {
		t.Errorf("an agent: %+v", n)
	}
	if n, ok := list("--all")["auditor"]; !ok || n.Status != "revoked" {
		t.Errorf("nodes list --all: auditor %+v, %v", n, ok)
	}
	code, out, _ := run(t, env, "nodes", "list")
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, "spiffe://agentmesh.local/agent/teller") ||
		strings.Contains(out, "auditor") || !regexp.MustCompile(`(?m)^pager .*serving`).MatchString(out) {
		t.Fatalf("nodes list table: exit %d\n%s", code, out)
	}

	// Stopped: no netmap watch for longer than a long poll and the margin.
	// The address stays registered; the node is not serving.
	stop()
	clock.Advance(longPoll + time.Minute)
	if n := list()["pager"]; n.Serving || n.Status != "active" || n.LastSeen.IsZero() {
		t.Errorf("a stopped gateway: %+v, want not serving with a last seen", n)
	}
	if _, out, _ := run(t, env, "nodes", "list"); !regexp.MustCompile(`(?m)^pager .*not serving .* ago`).MatchString(out) {
		t.Errorf("nodes list table after the gateway stopped:\n%s", out)
	}
}
