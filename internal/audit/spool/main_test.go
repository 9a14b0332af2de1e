package spool

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
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
func testEvent(i int) audit.Event { return audittest.Event(i, testBase) }

func testEvents(from, n int) []audit.Event { return audittest.Events(from, n, testBase) }

// openTestSpool opens a spool in dir and closes it at cleanup.
func openTestSpool(t testing.TB, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
