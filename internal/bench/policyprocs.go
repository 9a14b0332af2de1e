package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlclient"
)

// scenarioPolicyProcs measures apply -> enforced with every gateway an
// 'agentmesh serve' process of its own, started from this binary
// (os.Executable) in front of the bench's upstream, as the README deploys
// them. "Enforced" is the moment a gateway process has swapped the state
// its listeners enforce to the new policy version: serve -v logs
// "serve: enforcing view ... policy=N" right after the swap, and this
// process timestamps the line when it reads it from the gateway's stderr
// (an upper bound: the pipe and this reader add to it). Times count from
// the apply's response (the admin API's answer), and, as a second figure,
// from the start of the apply request. The coordinator is the bench's
// in-process one.
func scenarioPolicyProcs(ctx context.Context, r *runner, res *Result) error {
	res.Columns = []string{ColAgentmesh}
	n, applies := r.cfg.Gateways, pick(r.cfg.Quick, 3, 20)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("the agentmesh binary: %w", err)
	}
	m, err := r.controlMesh(ctx)
	if err != nil {
		return err
	}
	key, err := m.key(ctx, "tool", []string{"tag:bench-fleet"}, true)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	r.progress("  joining %d gateway nodes and starting 'agentmesh serve' for each", n)
	fleet := &procFleet{changed: make(chan struct{})}
	defer fleet.stop()
	for i := range n {
		name := "proc-fleet-" + strconv.Itoa(i)
		state := filepath.Join(r.dir, "proc-fleet", name)
		if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key, Name: name, State: state}); err != nil {
			return fmt.Errorf("join %s: %w", name, err)
		}
		if err := fleet.start(r, exe, "serve", "--state", state, "--upstream", r.up.url, "-v"); err != nil {
			return fmt.Errorf("start the gateway of %s: %w", name, err)
		}
	}
	// Every gateway enforces the current policy before the first apply.
	ver, err := m.apply(ctx)
	res.Calls++
	if err != nil {
		res.Failed++
		return fmt.Errorf("apply: %w", err)
	}
	if _, err := fleet.wait(ctx, ver, 2*time.Minute); err != nil {
		res.Failed++
		return err
	}
	var fromResp, fromStart, last samples
	for range applies {
		start := time.Now()
		ver, err := m.apply(ctx)
		answered := time.Now()
		res.Calls++
		if err != nil {
			res.Failed++
			return fmt.Errorf("apply: %w", err)
		}
		seen, err := fleet.wait(ctx, ver, 30*time.Second)
		if err != nil {
			res.Failed++
			return err
		}
		var worst time.Duration
		for _, at := range seen {
			fromResp = append(fromResp, max(at.Sub(answered), 0))
			fromStart = append(fromStart, at.Sub(start))
			worst = max(worst, at.Sub(answered))
		}
		last = append(last, worst)
	}
	res.row("per gateway p50", "ms", true, map[string]float64{ColAgentmesh: ms(fromResp.pct(50))})
	res.row("per gateway p99", "ms", true, map[string]float64{ColAgentmesh: ms(fromResp.pct(99))})
	res.row("last gateway p50", "ms", true, map[string]float64{ColAgentmesh: ms(last.pct(50))})
	res.row("last gateway max", "ms", true, map[string]float64{ColAgentmesh: ms(last.pct(100))})
	res.row("p99 from the apply's start", "ms", true, map[string]float64{ColAgentmesh: ms(fromStart.pct(99))})
	text := fmt.Sprintf("apply -> enforced <= 250 ms at p99 on %d gateway processes", n)
	if n < 100 {
		text += " (the goal is for 100; run without --quick)"
	}
	res.goal(fromResp.pct(99) <= 250*time.Millisecond, text, "p99 %.1f ms after the apply's response over %d applies x %d gateways", ms(fromResp.pct(99)), applies, n)
	res.note("each gateway is an 'agentmesh serve -v' process; enforced = it logged the new policy version right after swapping its state; the coordinator runs in the bench process")
	return nil
}

// procFleet is a set of gateway processes and the policy versions each has
// reported enforcing.
type procFleet struct {
	mu      sync.Mutex
	procs   []*gatewayProc
	changed chan struct{} // closed and replaced when any process reports
	wg      sync.WaitGroup
}

// gatewayProc is one 'agentmesh serve' process.
type gatewayProc struct {
	cmd  *exec.Cmd
	seen map[int64]time.Time // policy version -> when its line was read
	tail []string            // the last lines of its log, for errors
	done bool                // its stderr ended
}

// enforcingLine is what serve -v writes after a swap (see engine's onView).
const enforcingLine = `msg="serve: enforcing view"`

// start runs argv as a fleet process and reads its stderr. Like every
// child of the bench it is started by the runner's spawning thread with
// childAttr, so a bench that dies takes its hundred gateways with it.
func (f *procFleet) start(r *runner, exe string, args ...string) error {
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = childAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	r.spawn(func() { err = cmd.Start() })
	if err != nil {
		return err
	}
	p := &gatewayProc{cmd: cmd, seen: map[int64]time.Time{}}
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			now, line := time.Now(), sc.Text()
			f.mu.Lock()
			if p.tail = append(p.tail, line); len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			if v, ok := enforcedVersion(line); ok {
				if _, dup := p.seen[v]; !dup {
					p.seen[v] = now
					close(f.changed)
					f.changed = make(chan struct{})
				}
			}
			f.mu.Unlock()
		}
		f.mu.Lock()
		p.done = true
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}()
	return nil
}

// enforcedVersion returns the policy version of a "serve: enforcing view"
// line of serve -v's text log.
func enforcedVersion(line string) (int64, bool) {
	if !strings.Contains(line, enforcingLine) {
		return 0, false
	}
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "policy="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// wait returns when every process has reported enforcing version ver (or
// a later one), with the time each was first seen.
func (f *procFleet) wait(ctx context.Context, ver int64, limit time.Duration) ([]time.Time, error) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		out := make([]time.Time, 0, len(f.procs))
		var missing *gatewayProc
		for _, p := range f.procs {
			var at time.Time
			for v, t := range p.seen {
				if v >= ver && (at.IsZero() || t.Before(at)) {
					at = t
				}
			}
			if at.IsZero() {
				missing = p
				break
			}
			out = append(out, at)
		}
		changed := f.changed
		f.mu.Unlock()
		if missing == nil {
			return out, nil
		}
		if missing.done {
			return nil, fmt.Errorf("gateway process %d exited before enforcing policy version %d: %s", missing.cmd.Process.Pid, ver, missing.lastLines())
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("gateway process %d did not enforce policy version %d within %v: %s", missing.cmd.Process.Pid, ver, limit, missing.lastLines())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (p *gatewayProc) lastLines() string { return strings.Join(p.tail, "\n") }

// stop ends every process (SIGTERM to its group, SIGKILL after 10 s) and
// waits for it and its reader.
func (f *procFleet) stop() {
	f.mu.Lock()
	procs := f.procs
	f.mu.Unlock()
	for _, p := range procs {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, p := range procs {
		exited := make(chan struct{})
		go func() {
			p.cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	f.wg.Wait()
}
