package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"agentmesh/internal/store"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(killHelperEnv); dir != "" {
		runKillHelper(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

// testBase is the time of event 0 in tests.
var testBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testEvent returns a valid event numbered i with a predictable id.
func testEvent(i int) Event {
	return Event{
		V:             SchemaVersion,
		ID:            fmt.Sprintf("%032x", i+1),
		Time:          testBase.Add(time.Duration(i) * time.Second),
		Kind:          KindRequest,
		Src:           fmt.Sprintf("spiffe://mesh.test/agent/a%d", i%7),
		SrcAddr:       "127.0.0.1:40000",
		Dst:           fmt.Sprintf("spiffe://mesh.test/tool/t%d", i%3),
		Method:        "tools/call",
		Tool:          fmt.Sprintf("tool%d", i%5),
		Decision:      []Decision{Allow, Deny}[i%2],
		Reason:        "granted",
		Rule:          "grants[0]",
		PolicyVersion: "7",
		Session:       "s1",
		LatencyUS:     int64(i % 1000),
		Outcome:       "ok",
	}
}

func testEvents(from, n int) []Event {
	out := make([]Event, n)
	for i := range out {
		out[i] = testEvent(from + i)
	}
	return out
}

// testStore opens a store on a fresh database with a fresh key.
func testStore(t testing.TB, opts StoreOptions) (*Store, *sql.DB, ed25519.PublicKey) {
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
	s, err := NewStore(context.Background(), db, priv, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, db, pub
}

// openTestSpool opens a spool in dir and closes it at cleanup.
func openTestSpool(t testing.TB, dir string, opts SpoolOptions) *Spool {
	t.Helper()
	s, err := OpenSpool(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
