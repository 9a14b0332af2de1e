//go:build unix

package spool

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// killHelperEnv names the spool directory for the helper process that
// TestSpoolLosesNothingAppendedWhenKilled starts.
const killHelperEnv = "AGENTMESH_AUDIT_KILL_HELPER"

// runKillHelper runs in the child: it appends rounds of events, reporting
// after each round how many Appends have returned (flushing only the first
// rounds), and keeps appending until killed.
func runKillHelper(dir string) {
	s, err := Open(dir, Options{SegmentSize: 64 << 10})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := context.Background()
	n := 0
	for round := 0; ; round++ {
		for range 100 {
			e := testEvent(n)
			if err := s.Append(ctx, &e); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			n++
		}
		if round < 10 {
			if err := s.Flush(ctx); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
		}
		fmt.Println("appended", n)
	}
}

// TestSpoolLosesNothingAppendedWhenKilled kills the writer while it is
// appending, most events not yet fsynced: every event whose Append returned
// must be there after reopening.
func TestSpoolLosesNothingAppendedWhenKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killHelperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	appended := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "appended" {
			appended, _ = strconv.Atoi(f[1])
			if appended >= 3000 {
				break
			}
			continue
		}
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %s", sc.Text())
	}
	// The helper is still appending, most of it not fsynced, when it dies.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if appended < 3000 {
		t.Fatalf("helper appended only %d events", appended)
	}

	s := openTestSpool(t, dir, Options{SegmentSize: 64 << 10})
	got := drain(t, s)
	if len(got) < appended {
		t.Fatalf("reopened spool has %d events, %d Appends had returned", len(got), appended)
	}
	for i, e := range got {
		if e.ID != testEvent(i).ID {
			t.Fatalf("event %d has id %s, want %s", i, e.ID, testEvent(i).ID)
		}
	}
	t.Logf("appended %d before the kill, recovered %d", appended, len(got))
}
