package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// Process is one OS process the bench started: a component as deployed.
type Process struct {
	// Role says what runs in it: "coordinator", "gateway", "connector",
	// "upstream", "httputil", "go-chain hop 1", "nginx", ...
	Role string `json:"role"`
	PID  int    `json:"pid"`
}

// proc is a running child process.
type proc struct {
	role   string
	cmd    *exec.Cmd
	log    string        // its stderr and stdout, a file in the work directory
	ready  chan []byte   // ready-signal lines (descriptor 3 in the child)
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's, valid once exited is closed
}

// stopGrace is how long a child gets to stop after SIGTERM (SIGINT for
// nginx) before its process group is killed.
const stopGrace = 10 * time.Second

// spawner starts every child of the bench from one goroutine locked to
// its OS thread: Linux delivers a child's parent-death signal when the
// thread that forked it exits, so that thread must live as long as the
// children do. Started on first use, stopped by the runner after every
// child has exited.
type spawner struct {
	once sync.Once
	reqs chan func()
}

func (r *runner) spawn(f func()) {
	r.spawner.once.Do(func() {
		r.spawner.reqs = make(chan func())
		stop := make(chan struct{})
		r.goStop(func() {
			runtime.LockOSThread()
			// Unlocked before returning, so that the thread survives and
			// takes no child with it (the children are gone by then).
			defer runtime.UnlockOSThread()
			for {
				select {
				case f := <-r.spawner.reqs:
					f()
				case <-stop:
					return
				}
			}
		})
		// Registered first, so it runs last: after every child is stopped.
		r.onStop(func() { close(stop) })
	})
	done := make(chan struct{})
	r.spawner.reqs <- func() { f(); close(done) }
	<-done
}

// startProc runs the program exe with args (and extra environment) as a
// process of its own (launch) and waits until it announces an endpoint on
// descriptor 3: the --ready-fd signal of serve, connect and coordinator,
// and of the bench's own roles. It returns the first announcement.
func (r *runner) startProc(ctx context.Context, role string, env []string, exe string, args ...string) (*proc, engine.Serving, error) {
	var s engine.Serving
	p, err := r.launch(role, env, exe, args...)
	if err != nil {
		return nil, s, err
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case line, ok := <-p.ready:
		if !ok {
			<-p.exited
			return nil, s, fmt.Errorf("%s exited before it served (%v): %s", role, p.err, p.tail())
		}
		if err := json.Unmarshal(line, &s); err != nil {
			return nil, s, fmt.Errorf("%s: ready signal %q: %w", role, line, err)
		}
		return p, s, nil
	case <-timer.C:
		return nil, s, fmt.Errorf("%s did not serve within 30s: %s", role, p.tail())
	case <-ctx.Done():
		return nil, s, ctx.Err()
	}
}

// launch starts exe as a child in its own process group, its output in a
// log file of the work directory, descriptor 3 a pipe whose lines arrive
// on p.ready. The process is stopped when the runner stops, and killed by
// the kernel if the bench dies first (Linux).
func (r *runner) launch(role string, env []string, exe string, args ...string) (*proc, error) {
	logFile := filepath.Join(r.dir, "log", strings.ReplaceAll(role, " ", "-")+".log")
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	out, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child holds its own descriptor
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &proc{role: role, log: logFile, ready: make(chan []byte, 16), exited: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.ExtraFiles = []*os.File{wr} // descriptor 3
	p.cmd.SysProcAttr = childAttr()
	r.spawn(func() { err = p.cmd.Start() })
	wr.Close()
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("%s: %w", role, err)
	}
	r.goStop(func() {
		defer rd.Close()
		defer close(p.ready)
		sc := bufio.NewScanner(rd)
		for sc.Scan() {
			select {
			case p.ready <- bytes.Clone(sc.Bytes()):
			default: // nobody waits for later announcements
			}
		}
	})
	r.goStop(func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	})
	r.onStop(p.stop)
	r.mu.Lock()
	r.procs = append(r.procs, Process{Role: role, PID: p.pid()})
	r.children = append(r.children, p)
	r.mu.Unlock()
	return p, nil
}

// stop ends the process group: SIGTERM (the components' clean shutdown,
// which also writes a CPU profile), then SIGKILL after stopGrace.
func (p *proc) stop() {
	p.signal(false)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
	}
	p.signal(true) // whatever is left of the group
	<-p.exited
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// roleEnv selects a hidden role of the agentmesh binary: 'agentmesh bench'
// run with it set serves that role (RunRole) instead of benchmarking, so
// that the upstream and the comparison proxies are processes of their own
// built from the same binary.
const RoleEnv = "AGENTMESH_BENCH_ROLE"

// CPUProfileEnv names the file to which an agentmesh process writes a CPU
// profile of its whole run (see cli.Run). The bench sets it for the
// gateway and the connector with --profile-dir.
const CPUProfileEnv = "AGENTMESH_CPUPROFILE"

// rss returns the resident set size of pid and of its descendants (nginx's
// workers), in bytes.
func rss(pid int) (int64, error) {
	var total int64
	for _, p := range descendants(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return 0, err
		}
		found := false
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				var kb int64
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
					return 0, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", p, v, err)
				}
				total += kb << 10
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("/proc/%d/status: no VmRSS", p)
		}
	}
	return total, nil
}

// descendants returns pid and every process below it, from /proc's
// children lists.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			for _, f := range strings.Fields(string(b)) {
				var c int
				if _, err := fmt.Sscanf(f, "%d", &c); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

var errNoProcfs = errors.New("no /proc: memory per session as deployed needs Linux")

func procfs() error {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		return errNoProcfs
	}
	return nil
}
