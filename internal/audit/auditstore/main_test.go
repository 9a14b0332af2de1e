package auditstore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// TestMain runs the whole suite twice, on SQLite and then on PostgreSQL
// (a private server, pgtest): the audit store promises the same on both.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		fmt.Println("== the same tests on PostgreSQL")
		backend = store.Postgres
		code = m.Run()
	}
	pgtest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// backend is the database the tests of this run use.
var backend = store.SQLite

// testDB opens a fresh database on backend.
func testDB(t testing.TB) *store.DB { return openTarget(t, testTarget(t)) }

// testTarget makes a fresh database on backend and returns its target.
func testTarget(t testing.TB) string {
	if backend == store.Postgres {
		return pgtest.Shared(t).NewDatabase(t)
	}
	return filepath.Join(t.TempDir(), "mesh.db")
}

// openTarget opens target, closing it when t ends.
func openTarget(t testing.TB, target string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testBase is the time of event 0 in tests.
var testBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testEvent returns a valid event numbered i with a predictable id.
func testEvent(i int) audit.Event { return audittest.Event(i, testBase) }

func testEvents(from, n int) []audit.Event { return audittest.Events(from, n, testBase) }

// testStore opens a store on a fresh database with a fresh key.
func testStore(t testing.TB, opts Options) (*Store, *store.DB, ed25519.PublicKey) {
	t.Helper()
	db := testDB(t)
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
