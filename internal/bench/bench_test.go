package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/bench"
	"github.com/agentmesh/agentmesh/internal/cli"
)

// asCLIEnv makes this test binary the agentmesh binary: scenarios that
// start components as processes run os.Executable() (this test binary,
// here) with agentmesh's arguments.
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

// TestBenchSmoke runs 'agentmesh bench --quick --json' as CI does: every
// scenario must run and count operations without a failure. It asserts
// no timing: goals are reported, never enforced here.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole mesh, proxies and nginx; skipped with -short")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Setenv(asCLIEnv, "1") // for the gateway processes
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := cli.Run(ctx, []string{"bench", "--quick", "--json"}, cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	if code != 0 {
		t.Fatalf("exit status %d\nstderr:\n%s\nstdout:\n%s", code, errb.String(), out.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if len(rep.Scenarios) != len(bench.Scenarios()) {
		t.Fatalf("ran %d scenarios, want %d", len(rep.Scenarios), len(bench.Scenarios()))
	}
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
		{"no components", bench.Config{}, bench.ErrNoComponents},
		{"no connector", bench.Config{Components: noConnector}, bench.ErrNoComponents},
		{"unknown scenario", bench.Config{Components: both, Scenarios: []string{"nope"}}, bench.ErrUnknownScenario},
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
