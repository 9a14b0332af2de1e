package coordinator_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator"
)

// verifyOK runs audit verify as the admin and fails unless it passes.
func (m *mesh) verifyOK(t *testing.T) audit.Report {
	t.Helper()
	var rep audit.Report
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil || !rep.OK {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	return rep
}

func TestCoordinatorKeepsDatabaseApartFromAuditKey(t *testing.T) {
	m := startMesh(t)
	dbDir := filepath.Dir(coordinator.DatabasePath(m.data))
	if _, err := os.Stat(filepath.Join(m.data, coordinator.AuditKeyFile)); err != nil {
		t.Fatalf("audit key: %v", err)
	}
	entries, err := os.ReadDir(dbDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), coordinator.DatabaseFile) {
			t.Errorf("%s holds %s: the database's directory holds only the database", dbDir, e.Name())
		}
	}
	if fi, err := os.Stat(dbDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("database directory: %v %v", fi.Mode(), err)
	}
}

// TestCoordinatorMovesDatabaseOfOldDataDirectory: a data directory written
// before the database had its own directory keeps working; its database
// moves, with everything in it.
func TestCoordinatorMovesDatabaseOfOldDataDirectory(t *testing.T) {
	m := startMesh(t)
	for range 3 {
		m.key(controlapi.KeyCreateRequest{Kind: "agent"})
	}
	before := m.verifyOK(t)
	m.stop()
	// The old layout: DATA/mesh.db beside the keys.
	path := coordinator.DatabasePath(m.data)
	if err := os.Rename(path, filepath.Join(m.data, coordinator.DatabaseFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	m.start()
	after := m.verifyOK(t)
	if after.Events < before.Events || after.Checkpoints < before.Checkpoints {
		t.Fatalf("after the move: %+v, before %+v", after, before)
	}
	if _, err := os.Stat(filepath.Join(m.data, coordinator.DatabaseFile)); !os.IsNotExist(err) {
		t.Fatalf("the old database is still beside the keys: %v", err)
	}
	// Both at once is ambiguous: refused, not guessed.
	m.stop()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(m.data, coordinator.DatabaseFile), b, 0o600)
	if _, err := coordinator.Start(context.Background(), coordinator.Config{DataDir: m.data, Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("start with two databases: %v", err)
	}
}

func TestCoordinatorRefusesAuditKeyInDatabaseDirectoryOrAMissingOne(t *testing.T) {
	m := startMesh(t)
	m.key(controlapi.KeyCreateRequest{Kind: "agent"})
	m.verifyOK(t) // signs a checkpoint
	m.stop()
	ctx := context.Background()
	inDB := filepath.Join(filepath.Dir(coordinator.DatabasePath(m.data)), "audit.key")
	if _, err := coordinator.Start(ctx, coordinator.Config{DataDir: m.data, Listen: "127.0.0.1:0", AuditKeyFile: inDB}); err == nil ||
		!strings.Contains(err.Error(), "database") {
		t.Fatalf("audit key in the database's directory: %v", err)
	}
	// The key moves elsewhere (another volume, another owner): a start
	// without --audit-key must not quietly make a new one.
	elsewhere := filepath.Join(t.TempDir(), "audit.key")
	if err := os.Rename(filepath.Join(m.data, coordinator.AuditKeyFile), elsewhere); err != nil {
		t.Fatal(err)
	}
	if _, err := coordinator.Start(ctx, coordinator.Config{DataDir: m.data, Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("start without the audit key: %v", err)
	}
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: m.data, Listen: m.listen, Now: m.clock.Now, AuditKeyFile: elsewhere})
	if err != nil {
		t.Fatal(err)
	}
	m.co = co
	m.admin = m.client(co.AdminDir())
	m.verifyOK(t)
	if _, err := os.Stat(filepath.Join(m.data, coordinator.AuditKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("a key was created in the data directory: %v", err)
	}
}
