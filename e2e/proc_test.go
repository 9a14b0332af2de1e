//go:build unix

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopGrace bounds how long a process gets to exit after SIGINT before its
// whole process group is killed.
const stopGrace = 10 * time.Second

// lines is an io.Writer that keeps what a process writes as complete lines
// and wakes up anyone waiting for a new one.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
	changed chan struct{} // closed and replaced on every new line
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// snapshot returns the lines so far and a channel closed when more arrive.
func (l *lines) snapshot() ([]string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...), l.changed
}

// String returns everything written, including an unfinished last line.
func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n") + "\n" + string(l.partial)
}

// proc is a long-running agentmesh process (coordinator, gateway, HTTP
// connector, audit follower) owned by one test: t.Cleanup stops it.
type proc struct {
	label          string
	cmd            *exec.Cmd
	stdout, stderr *lines
	// ready holds the JSON lines of --ready-fd (startServer only).
	ready   *lines
	exited  chan struct{} // closed when Wait returned
	waitErr error         // set before exited is closed
}

// startProc starts argv in its own process group, so that cleanup can also
// reach the children it spawns (a gateway's upstream MCP servers).
func startProc(t testing.TB, label string, argv []string, env []string) *proc {
	t.Helper()
	return start(t, label, argv, env, false)
}

// startServer starts an agentmesh command that serves (coordinator, serve,
// connect) as startProc does, with --ready-fd 3 on a pipe whose lines
// waitServing reads: the machine-readable ready signal, not the human log.
func startServer(t testing.TB, label string, argv []string, env []string) *proc {
	t.Helper()
	// The flag goes right after the command name, before any "--".
	withFD := append(append(append([]string{}, argv[:2]...), "--ready-fd", "3"), argv[2:]...)
	return start(t, label, withFD, env, true)
}

func start(t testing.TB, label string, argv []string, env []string, ready bool) *proc {
	t.Helper()
	p := &proc{label: label, stdout: newLines(), stderr: newLines(), exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A grandchild that outlives the process could hold the output pipes
	// open; do not wait for it forever.
	p.cmd.WaitDelay = stopGrace
	var rd, wr *os.File
	if ready {
		var err error
		if rd, wr, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		p.ready = newLines()
		p.cmd.ExtraFiles = []*os.File{wr} // descriptor 3 in the child
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	if ready {
		wr.Close() // the child holds its own copy
		go func() {
			defer rd.Close()
			io.Copy(p.ready, rd) // ends when the child exits
		}()
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s stdout:\n%s", label, p.stdout)
			t.Logf("%s stderr:\n%s", label, p.stderr)
		}
	})
	return p
}

// serving is an endpoint's ready line (engine.Serving as JSON).
type serving struct {
	Component  string `json:"component"`
	Node       string `json:"node"`
	API        string `json:"api"`
	Network    string `json:"network"`
	Addr       string `json:"addr"`
	URL        string `json:"url"`
	Service    string `json:"service"`
	TokenFile  string `json:"token_file"`
	AdminState string `json:"admin_state"`
}

// waitServing waits for the first ready line of a process started with
// startServer and decodes it.
func (p *proc) waitServing(timeout time.Duration) (serving, error) {
	var s serving
	_, err := p.waitLine(p.ready, timeout, func(l string) bool {
		s = serving{}
		return json.Unmarshal([]byte(l), &s) == nil && s.Component != ""
	})
	return s, err
}

// stop interrupts the process, as Ctrl-C would, and kills its process group
// if it has not exited within stopGrace.
func (p *proc) stop(t testing.TB) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		t.Errorf("%s did not exit within %v of SIGINT; killing it", p.label, stopGrace)
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	// Children the process should have stopped; anything left of the group
	// is killed so that no test leaves processes behind.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// errExited reports a process that ended while a test waited for its output.
var errExited = errors.New("process exited")

// waitLine waits until a line of out satisfies match and returns it. It
// gives up after timeout or when the process exits without such a line.
func (p *proc) waitLine(out *lines, timeout time.Duration, match func(string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		all, changed := out.snapshot()
		for _, l := range all[seen:] {
			if match(l) {
				return l, nil
			}
		}
		seen = len(all)
		select {
		case <-changed:
		case <-p.exited:
			// The last lines may have been written just before exit.
			all, _ = out.snapshot()
			for _, l := range all[seen:] {
				if match(l) {
					return l, nil
				}
			}
			return "", fmt.Errorf("%s: %w (%v)", p.label, errExited, p.waitErr)
		case <-deadline.C:
			return "", fmt.Errorf("%s: no matching output line within %v", p.label, timeout)
		}
	}
}
