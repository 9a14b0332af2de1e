// Command gotest runs `go test` and ends with every skipped test and its
// reason: plain `go test ./...` shows a passing package as one "ok" line,
// skips included, so a test that quietly skips on one machine (no Node.js,
// no network namespace) looks the same as one that ran. It is the README's
// test command:
//
//	go run ./internal/tools/gotest ./...
//
// Its arguments go to `go test -json` unchanged (packages, -short, -run,
// -count, ...). It prints what `go test` prints without -v: one line per
// package (ok, FAIL, no test files), the whole output of every failing
// test, build errors; then, at the end, one line per skipped test (package,
// test name, the reason the test gave). It exits with go test's status, so
// scripts and CI can use it in place of `go test`.
//
// It is a development tool, in the "test helpers" layer of ARCHITECTURE.md:
// nothing in the binary imports it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run runs `go test -json args...`, reports on stdout as it goes and
// returns go test's exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = stderr // go test's own errors (bad flags, missing packages)
	// Ctrl-C reaches go test from the terminal too; passing it on (not a
	// kill) lets go test stop its test binaries and report.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(stderr, "gotest: %v\n", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "gotest: %v\n", err)
		return 2
	}
	r := newReport(stdout)
	readErr := r.read(out)
	waitErr := cmd.Wait()
	r.summary()
	if readErr != nil {
		fmt.Fprintf(stderr, "gotest: reading go test's output: %v\n", readErr)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	case errors.As(waitErr, &exit):
		return 1 // killed by a signal
	case waitErr != nil:
		fmt.Fprintf(stderr, "gotest: %v\n", waitErr)
		return 2
	case readErr != nil:
		return 2
	}
	return 0
}
