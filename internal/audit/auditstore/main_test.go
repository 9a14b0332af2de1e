package auditstore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testBase is the time of event 0 in tests.
var testBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testEvent returns a valid event numbered i with a predictable id.
func testEvent(i int) audit.Event { return audittest.Event(i, testBase) }

func testEvents(from, n int) []audit.Event { return audittest.Events(from, n, testBase) }

// testStore opens a store on a fresh database with a fresh key.
func testStore(t testing.TB, opts Options) (*Store, *sql.DB, ed25519.PublicKey) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "mesh.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), db, priv, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, db, pub
}
