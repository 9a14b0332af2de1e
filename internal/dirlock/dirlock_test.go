package dirlock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func needFlock(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" || runtime.GOOS == "js" || runtime.GOOS == "wasip1" {
		t.Skipf("no flock on %s: Acquire does not lock there", runtime.GOOS)
	}
}

func TestSecondAcquireIsRefusedWithTheHolderNamed(t *testing.T) {
	needFlock(t)
	dir := t.TempDir()
	since := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	l, err := Acquire(dir, "data directory", Holder{Command: "agentmesh coordinator", Listen: "127.0.0.1:7443", Since: since})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Acquire(dir, "data directory", Holder{Command: "agentmesh coordinator"})
	var inUse *InUseError
	if !errors.Is(err, ErrInUse) || !errors.As(err, &inUse) {
		t.Fatalf("second Acquire = %v, want an InUseError", err)
	}
	want := fmt.Sprintf("data directory %s is in use by agentmesh coordinator (pid %d, listening on 127.0.0.1:7443, since %s); stop it first",
		dir, os.Getpid(), since.Format(time.RFC3339))
	if err.Error() != want {
		t.Errorf("error:\n got %s\nwant %s", err, want)
	}
}

func TestSetListenIsWhatTheNextAcquirerReads(t *testing.T) {
	needFlock(t)
	dir := t.TempDir()
	l, err := Acquire(dir, "node state directory", Holder{Command: "agentmesh serve"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetListen("127.0.0.1:7801"); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "node state directory", Holder{})
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Holder.Listen != "127.0.0.1:7801" || inUse.Holder.Command != "agentmesh serve" || inUse.Holder.PID != os.Getpid() {
		t.Fatalf("second Acquire = %v (%+v), want the holder listening on 127.0.0.1:7801", err, inUse)
	}
}

func TestCloseReleasesTheLock(t *testing.T) {
	needFlock(t)
	dir := t.TempDir()
	l, err := Acquire(dir, "data directory", Holder{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	again, err := Acquire(dir, "data directory", Holder{})
	if err != nil {
		t.Fatalf("Acquire after Close = %v", err)
	}
	again.Close()
}

func TestUnreadableDescriptionStillRefusesAndSaysSo(t *testing.T) {
	needFlock(t)
	dir := t.TempDir()
	l, err := Acquire(dir, "data directory", Holder{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The holder may be between truncating and writing its description.
	if err := os.Truncate(filepath.Join(dir, LockFile), 0); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "data directory", Holder{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("Acquire = %v, want in use by another process", err)
	}
}

// envHold makes the test binary, run as a child, hold the lock of the
// directory it names until it is killed.
const envHold = "DIRLOCK_TEST_HOLD"

func TestHelperHoldsLock(t *testing.T) {
	dir := os.Getenv(envHold)
	if dir == "" {
		return // run as a child by TestLockOfAKilledProcessIsReleased
	}
	l, err := Acquire(dir, "data directory", Holder{Command: "lock holder"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin) // until killed
	l.Close()
	os.Exit(0)
}

// TestLockOfAKilledProcessIsReleased: the kernel releases a flock when
// its holder dies, even by SIGKILL, so a crashed coordinator or gateway
// never leaves a directory that needs a lock file removed by hand.
func TestLockOfAKilledProcessIsReleased(t *testing.T) {
	needFlock(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldsLock$")
	cmd.Env = append(os.Environ(), envHold+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	_, err = Acquire(dir, "data directory", Holder{})
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Holder.PID != cmd.Process.Pid || inUse.Holder.Command != "lock holder" {
		t.Fatalf("Acquire while the child holds the lock = %v, want it named (pid %d)", err, cmd.Process.Pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	l, err := Acquire(dir, "data directory", Holder{})
	if err != nil {
		t.Fatalf("Acquire after the holder was killed = %v", err)
	}
	l.Close()
}
