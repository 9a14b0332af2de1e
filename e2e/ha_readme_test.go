//go:build unix

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// haTitle is the README section TestHighAvailabilityAsWritten runs.
const haTitle = "## High availability: several coordinators on PostgreSQL"

// TestHighAvailabilityAsWritten runs the README's high-availability block
// as written, in one bash, against a private PostgreSQL server. It
// substitutes, each of which must occur in the block (so that a change
// there cannot quietly make this test check less):
//  1. the DB= line: the URL of an empty database on the private server;
//  2. "~/agentmesh-ha": a temporary directory;
//  3. "go build -o DEST ./cmd/agentmesh": a copy of the binary TestMain
//     built from this tree;
//  4. the ports 7441, 7442 and 7443 (also written 744$i): free ports.
//
// Then it checks what the block shows: three coordinators on one
// database, a node joined with all three known, the first coordinator
// killed with SIGKILL, and the admin command, the node's status and audit
// verify still answered by the others.
func TestHighAvailabilityAsWritten(t *testing.T) {
	requireE2E(t)
	script := readHABlock(t)
	home := filepath.Join(t.TempDir(), "agentmesh-ha")
	db := pgtest.Shared(t).NewDatabase(t)
	ports := freePorts(t, 3)
	subst := []struct{ from, to string }{
		{"DB='postgres://agentmesh@127.0.0.1:5432/agentmesh'", "DB='" + db + "'"},
		{"~/agentmesh-ha", home},
		{"go build -o " + home + "/agentmesh ./cmd/agentmesh", "cp " + agentmeshBin + " " + home + "/agentmesh"},
		{"127.0.0.1:744$i", "127.0.0.1:${AM_PORT[$i]}"},
		{"127.0.0.1:7441", "127.0.0.1:" + ports[0]},
		{"127.0.0.1:7442", "127.0.0.1:" + ports[1]},
		{"127.0.0.1:7443", "127.0.0.1:" + ports[2]},
	}
	for _, s := range subst {
		if !strings.Contains(script, s.from) {
			t.Fatalf("the README's block no longer contains %q", s.from)
		}
		script = strings.ReplaceAll(script, s.from, s.to)
	}
	script = fmt.Sprintf("set -eu\nAM_PORT=(0 %s)\n%s", strings.Join(ports, " "), script)
	checkout, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = checkout
	cmd.Env = (&mesh{}).env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The coordinators run in the background of this bash, in its
	// process group: whatever the block leaves running is killed with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	text := out.String()
	if err != nil {
		for i := 1; i <= 3; i++ {
			if b, rerr := os.ReadFile(filepath.Join(home, fmt.Sprintf("c%d.log", i))); rerr == nil {
				t.Logf("c%d.log:\n%s", i, b)
			}
		}
		t.Fatalf("the block failed: %v\n%s", err, text)
	}
	if stackTrace(text) {
		t.Fatalf("a stack trace:\n%s", text)
	}
	for _, want := range []string{
		"database:        postgresql", // the coordinator says where its state is
		"joined as spiffe://agentmesh.local/tool/files",
		"files",
		"audit trail intact",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the block's output lacks %q:\n%s", want, text)
		}
	}
	// The node's status names the coordinator it talks to: the first,
	// through which it joined, and after that one was killed another.
	var talks []string
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "coordinator:"); ok {
			talks = append(talks, strings.TrimSpace(rest))
		}
	}
	first := "https://127.0.0.1:" + ports[0] + ", reachable"
	if len(talks) != 2 || talks[0] != first || !strings.HasSuffix(talks[1], ", reachable") || strings.HasPrefix(talks[1], "https://127.0.0.1:"+ports[0]) {
		t.Errorf("the node's status named %q, want %q and then another coordinator, reachable", talks, first)
	}
}

// readHABlock returns the first ```sh block of the README's
// high-availability section.
func readHABlock(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+haTitle+"\n")
	if !ok {
		t.Fatalf("README.md has no section %q", haTitle)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	_, block, ok := strings.Cut(section, "\n```sh\n")
	if !ok {
		t.Fatal("the high-availability section has no ```sh block")
	}
	block, _, ok = strings.Cut(block, "\n```")
	if !ok {
		t.Fatal("the high-availability section's block does not end")
	}
	return block + "\n"
}

// freePorts returns n loopback ports the kernel had free a moment ago, for
// a script that must be told its ports in advance.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		ports = append(ports, p)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}
