//go:build unix

package audit

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
// TestSpoolLosesNothingFlushedWhenKilled starts.
const killHelperEnv = "AGENTMESH_AUDIT_KILL_HELPER"

// runKillHelper runs in the child: it appends and flushes rounds of events,
// reporting each flushed count on stdout, and keeps appending until killed.
func runKillHelper(dir string) {
	s, err := OpenSpool(dir, SpoolOptions{SegmentSize: 64 << 10})
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
		if round < 20 {
			if err := s.Flush(ctx); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Println("flushed", n)
		}
	}
}

func TestSpoolLosesNothingFlushedWhenKilled(t *testing.T) {
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
	flushed := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "flushed" {
			flushed, _ = strconv.Atoi(f[1])
			if flushed >= 2000 {
				break
			}
			continue
		}
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %s", sc.Text())
	}
	// The helper is still appending (unflushed) when it dies.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if flushed < 2000 {
		t.Fatalf("helper flushed only %d events", flushed)
	}

	s := openTestSpool(t, dir, SpoolOptions{SegmentSize: 64 << 10})
	got := drain(t, s)
	if len(got) < flushed {
		t.Fatalf("reopened spool has %d events, %d were flushed", len(got), flushed)
	}
	for i, e := range got {
		if e.ID != testEvent(i).ID {
			t.Fatalf("event %d has id %s, want %s", i, e.ID, testEvent(i).ID)
		}
	}
	t.Logf("flushed %d, recovered %d", flushed, len(got))
}
