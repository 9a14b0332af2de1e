package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/engine"
)

// startWatch is an output stream of a command that is expected to fail at
// start: if the command starts serving instead, it stops it (by cancelling
// its context) so that the test fails rather than hangs.
type startWatch struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	cancel context.CancelFunc
}

func (w *startWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if s := w.buf.String(); strings.Contains(s, "listening on") || strings.Contains(s, " serving ") {
		w.cancel()
	}
	return len(p), nil
}

func (w *startWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// checkStartFails runs args, which must fail at start, and checks what an
// operator sees: a non-zero status, nothing on stdout, and on stderr one
// line "agentmesh COMMAND: ..." containing want (a configuration mistake
// may add the usage line), and no Go stack trace or source position.
func checkStartFails(t *testing.T, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &startWatch{cancel: cancel}, &startWatch{cancel: cancel}
	code := Run(ctx, args, Env{Stdout: stdout, Stderr: stderr, Getenv: func(string) string { return "" }})
	out, errOut := stdout.String(), stderr.String()
	cmdline := "agentmesh " + strings.Join(args, " ")
	for _, stack := range []string{"goroutine ", "panic:", ".go:"} {
		if strings.Contains(out+errOut, stack) {
			t.Errorf("%s: the output has %q:\n%s%s", cmdline, stack, out, errOut)
		}
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	oneLine := len(lines) == 1 || len(lines) == 2 && strings.HasPrefix(lines[1], "usage: agentmesh "+args[0]+" ")
	if code == 0 || out != "" || !oneLine || !strings.HasPrefix(lines[0], "agentmesh "+args[0]+": ") || !strings.Contains(lines[0], want) {
		t.Errorf("%s: status %d, stdout %q, stderr:\n%s\nwant a non-zero status, nothing on stdout, and one line with %q", cmdline, code, out, errOut, want)
	}
}

// heldAddr returns a loopback address whose port a listener of the test
// holds until it ends.
func heldAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestCoordinatorExplainsEveryFailureToStart: an operator's mistake at
// start (a busy port, an address without a port, a data directory that
// is a file, unwritable or in use, an unwritable audit key, a malformed
// trust domain) ends the command with one line that says what is wrong
// and what to do, never a stack trace.
func TestCoordinatorExplainsEveryFailureToStart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy := heldAddr(t)
	data := func() string { return filepath.Join(t.TempDir(), "mesh") }
	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"port in use", "cannot listen on " + busy + ": the address is in use by another process; stop it or choose another address",
			[]string{"--data", data(), "--listen", busy}},
		{"listen without a port", `invalid listen address "127.0.0.1": want HOST:PORT`, []string{"--data", data(), "--listen", "127.0.0.1"}},
		{"data is a file", "data directory " + file + " is a file, not a directory; give --data a directory", []string{"--data", file, "--listen", "127.0.0.1:0"}},
		{"data under a file", "cannot create the data directory " + filepath.Join(file, "mesh"), []string{"--data", filepath.Join(file, "mesh"), "--listen", "127.0.0.1:0"}},
		{"audit key unwritable", "the audit signing key: open " + filepath.Join(file, "audit.key") + ": not a directory; give --audit-key a file in a directory that exists", []string{"--data", data(), "--listen", "127.0.0.1:0", "--audit-key", filepath.Join(file, "audit.key")}},
		{"trust domain malformed", `invalid trust domain: "Not_A_Domain!": want a DNS-style name`, []string{"--data", data(), "--listen", "127.0.0.1:0", "--trust-domain", "Not_A_Domain!"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkStartFails(t, c.want, append([]string{"coordinator"}, c.args...)...)
		})
	}
	t.Run("data in a directory without permission", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("running as root, whom directory permissions do not stop")
		}
		locked := filepath.Join(t.TempDir(), "locked")
		if err := os.Mkdir(locked, 0o500); err != nil {
			t.Fatal(err)
		}
		checkStartFails(t, "cannot create the data directory "+filepath.Join(locked, "mesh"), "coordinator", "--data", filepath.Join(locked, "mesh"), "--listen", "127.0.0.1:0")
	})
	t.Run("data in use", func(t *testing.T) {
		data := data()
		co, err := engine.StartCoordinator(context.Background(), engine.CoordinatorConfig{DataDir: data, Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		defer co.Close()
		checkStartFails(t, fmt.Sprintf("data directory %s is in use by agentmesh coordinator (pid %d, listening on %s, since ", data, os.Getpid(), co.Addr()),
			"coordinator", "--data", data, "--listen", "127.0.0.1:0")
		// The refused coordinator left the admin state naming the first.
		if code, out, errOut := run(t, nil, "nodes", "list", "--state", co.AdminDir()); code != 0 {
			t.Errorf("nodes list against the first coordinator: status %d\n%s%s", code, out, errOut)
		}
	})
}

// TestServeAndConnectExplainEveryFailureToStart: a missing or invalid
// state directory, the state of a node that cannot serve, a state
// directory another gateway serves, and a listen address in use end
// 'serve' and 'connect' with one line that says what to do.
func TestServeAndConnectExplainEveryFailureToStart(t *testing.T) {
	d, ctx := startTestMesh(t)
	var resp controlapi.KeyCreateResponse
	if err := d.Admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "tool"}, &resp); err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(d.Dir, "files")
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: resp.Key, Name: "files", State: files}); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(d.Dir, "missing")
	file := filepath.Join(d.Dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy := heldAddr(t)
	up := "http://127.0.0.1:1/mcp" // never reached: each command fails before
	ledger, teller := filepath.Join(d.Dir, "ledger"), filepath.Join(d.Dir, "teller")
	for _, c := range []struct {
		name, want string
		args       []string
	}{
		{"serve: state missing", missing + " does not exist; run agentmesh join --state " + missing, []string{"serve", "--state", missing, "--upstream", up}},
		{"serve: state is a file", file + " is not a directory; give the state directory", []string{"serve", "--state", file, "--upstream", up}},
		{"serve: an agent's state", "only tool and model nodes serve", []string{"serve", "--state", teller, "--upstream", up}},
		{"serve: the coordinator's admin state", "only tool and model nodes serve", []string{"serve", "--state", d.Coordinator.AdminDir(), "--upstream", up}},
		{"serve: state in use", fmt.Sprintf("node state directory %s is in use by agentmesh serve (pid %d, listening on 127.0.0.1:", ledger, os.Getpid()),
			[]string{"serve", "--state", ledger, "--upstream", up}},
		{"serve: listen address in use", "cannot listen on " + busy + ": the address is in use by another process", []string{"serve", "--state", files, "--listen", busy, "--upstream", up}},
		{"serve: listen without a port", `invalid listen address "127.0.0.1"`, []string{"serve", "--state", files, "--listen", "127.0.0.1", "--upstream", up}},
		{"connect: state missing", missing + " does not exist; run agentmesh join --state " + missing, []string{"connect", "ledger", "--state", missing}},
		{"connect: state is a file", file + " is not a directory; give the state directory", []string{"connect", "ledger", "--state", file}},
		{"connect: the coordinator's data directory", "is a coordinator's data directory, not a node's state; admin commands take its admin state, --state " + d.Coordinator.AdminDir(), []string{"connect", "ledger", "--state", filepath.Dir(d.Coordinator.AdminDir())}},
		{"connect: listen address in use", "cannot listen on " + busy + ": the address is in use by another process", []string{"connect", "ledger", "--state", teller, "--listen", busy}},
		{"connect: listen not loopback", "address is not loopback", []string{"connect", "ledger", "--state", teller, "--listen", "0.0.0.0:0"}},
	} {
		t.Run(c.name, func(t *testing.T) { checkStartFails(t, c.want, c.args...) })
	}
}
