package coordinator_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/metrics"
)

// TestCoordinatorCountsJoinsRenewalsAndRevocations: with Config.Metrics
// the coordinator counts joins by result, renewals, and revocations of
// nodes and keys.
func TestCoordinatorCountsJoinsRenewalsAndRevocations(t *testing.T) {
	m := &mesh{t: t, data: filepath.Join(t.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(), metrics: metrics.New()}
	m.start()
	ctx := context.Background()
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, err := m.metrics.Value(name, labels)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	revoked := m.key(controlapi.KeyCreateRequest{Kind: "agent"})
	k, _ := authkey.Parse(revoked)
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathKeys+"/"+k.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.join(revoked, "d1", ""); err == nil {
		t.Fatal("joined with a revoked key")
	}
	m.clock.Advance(45 * time.Minute)
	if _, err := agent.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/agent1/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"agentmesh_coordinator_joins_total", map[string]string{"reason": "allowed"}, 1},
		{"agentmesh_coordinator_joins_total", map[string]string{"reason": "key_revoked"}, 1},
		{"agentmesh_refused_connections_total", map[string]string{"reason": "key_revoked"}, 1},
		{"agentmesh_coordinator_renewals_total", map[string]string{"result": "ok"}, 1},
		{"agentmesh_coordinator_renewals_total", map[string]string{"result": "error"}, 0},
		{"agentmesh_coordinator_revocations_total", map[string]string{"what": "key"}, 1},
		{"agentmesh_coordinator_revocations_total", map[string]string{"what": "node"}, 1},
	} {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
