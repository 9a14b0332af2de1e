package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/bench"
	"github.com/agentmesh/agentmesh/internal/cli"
)

// asCLIEnv makes the test binary the agentmesh binary: the bench starts
// its components by running os.Executable() (this test binary, here)
// with agentmesh's arguments.
const asCLIEnv = "AGENTMESH_BENCH_TEST_AS_CLI"

func TestMain(m *testing.M) {
	if os.Getenv(asCLIEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := cli.Run(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// runBench runs 'agentmesh bench ARGS' as CI does and returns its report:
// every scenario must run and count operations without a failure. It
// asserts no timing: goals are reported, never enforced here.
func runBench(t *testing.T, args ...string) bench.Report {
	t.Helper()
	t.Setenv(asCLIEnv, "1") // for the children
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := cli.Run(ctx, append([]string{"bench"}, args...), cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	if code != 0 {
		t.Fatalf("exit status %d\nstderr:\n%s\nstdout:\n%s", code, errb.String(), out.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	checkScenarios(t, rep)
	return rep
}

// TestBenchSmoke runs 'agentmesh bench --quick --json': every component
// ran as a process of its own, and none is left when the bench returns.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole mesh, proxies and nginx as processes; skipped with -short")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rep := runBench(t, "--quick", "--json")
	if len(rep.Scenarios) != len(bench.Scenarios()) {
		t.Fatalf("ran %d scenarios, want %d", len(rep.Scenarios), len(bench.Scenarios()))
	}
	if rep.Layout != bench.LayoutDeployed || rep.BenchPID != os.Getpid() {
		t.Errorf("layout %q, bench pid %d: want %q and this process (%d)", rep.Layout, rep.BenchPID, bench.LayoutDeployed, os.Getpid())
	}
	pids := map[int]string{os.Getpid(): "bench"}
	for _, p := range rep.Processes {
		if other, ok := pids[p.PID]; ok {
			t.Errorf("%s and %s ran in one process (%d)", p.Role, other, p.PID)
		}
		pids[p.PID] = p.Role
		// Every child has been waited for: its pid names no process now
		// (the kernel reuses pids only after a full cycle).
		if err := syscall.Kill(p.PID, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) is still there after the bench: kill 0: %v", p.Role, p.PID, err)
		}
	}
	want := []string{"upstream", "httputil", "go-chain hop 1", "go-chain hop 2", "coordinator", "gateway", "connector"}
	if rep.Machine.Nginx != "not installed" {
		want = append(want, "nginx")
	}
	for _, role := range want {
		if !slices.Contains(slices.Collect(maps.Values(pids)), role) {
			t.Errorf("no process for %s: %v", role, rep.Processes)
		}
	}
}

// TestBenchInProcessBreakdown runs the in-process layout, which starts no
// process but nginx.
func TestBenchInProcessBreakdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole mesh, proxies and nginx; skipped with -short")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rep := runBench(t, "--quick", "--json", "--layout", "inprocess", "latency", "memory")
	if rep.Layout != bench.LayoutInProcess || len(rep.Scenarios) != 2 {
		t.Fatalf("layout %q, %d scenarios", rep.Layout, len(rep.Scenarios))
	}
	for _, p := range rep.Processes {
		if p.Role != "nginx" {
			t.Errorf("the in-process layout started %s as a process", p.Role)
		}
	}
}

func checkScenarios(t *testing.T, rep bench.Report) {
	t.Helper()
	for _, s := range rep.Scenarios {
		if s.Error != "" || s.Calls == 0 || s.Failed != 0 {
			t.Errorf("%s: error %q, %d operations, %d failed", s.Name, s.Error, s.Calls, s.Failed)
		}
		if len(s.Rows) == 0 {
			t.Errorf("%s: no figures", s.Name)
		}
		for _, row := range s.Rows {
			for i, v := range row.Values {
				// Only a column that could not start (nginx missing) may be empty.
				if v == nil && s.Columns[i] != bench.ColNginx {
					t.Errorf("%s: %s has no value for %s", s.Name, row.Metric, s.Columns[i])
				}
			}
		}
	}
	if rep.Machine.Nginx == "not installed" {
		t.Logf("nginx is not installed: the nginx-chain column was skipped")
	}
}

func TestRunRefusesMissingComponentsAndUnknownScenarios(t *testing.T) {
	both := bench.Components{
		Gateway:   func(context.Context, string, string, func(string)) error { return nil },
		Connector: func(context.Context, string, string, net.Listener) error { return nil },
	}
	noConnector := both
	noConnector.Connector = nil
	for _, tc := range []struct {
		name string
		cfg  bench.Config
		want error
	}{
		{"no executable", bench.Config{Components: both}, bench.ErrNoComponents},
		{"no connector", bench.Config{Layout: bench.LayoutInProcess, Components: noConnector, Executable: "/bin/agentmesh"}, bench.ErrNoComponents},
		{"unknown layout", bench.Config{Layout: "cloud", Executable: "/bin/agentmesh"}, bench.ErrUnknownLayout},
		{"unknown scenario", bench.Config{Executable: "/bin/agentmesh", Scenarios: []string{"nope"}}, bench.ErrUnknownScenario},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bench.Run(context.Background(), tc.cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestBenchHelpListsEveryScenario(t *testing.T) {
	var out bytes.Buffer
	if code := cli.Run(context.Background(), []string{"bench", "--help"}, cli.Env{Stdout: &out, Stderr: &out}); code != 0 {
		t.Fatalf("exit status %d: %s", code, out.String())
	}
	for _, name := range bench.ScenarioNames() {
		if !strings.Contains(out.String(), name) {
			t.Errorf("help does not mention scenario %s", name)
		}
	}
}
