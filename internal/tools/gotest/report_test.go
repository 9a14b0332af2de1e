package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/go-test.jsonl is `go test -json ./...` recorded on a module
// with a passing package whose tests and subtests skip with reasons, a
// failing package with a test that skips without one, a package without
// tests and one that does not compile.

// TestReportShowsWhatGoTestShowsThenEverySkip checks the whole report on
// the recording: ok, FAIL and no-test-files lines as go test prints them,
// the failing test's output (and no passing test's), the build error, and
// at the end every skip with its package, name and reason.
func TestReportShowsWhatGoTestShowsThenEverySkip(t *testing.T) {
	in, err := os.Open(filepath.Join("testdata", "go-test.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	r := newReport(&out)
	if err := r.read(in); err != nil {
		t.Fatal(err)
	}
	r.summary()
	want := strings.Join([]string{
		"ok  \texample.com/rec/a\t0.058s",
		"    b_test.go:5: the detail",
		"    b_test.go:5: got 1, want 2",
		"--- FAIL: TestFails (0.00s)",
		"FAIL",
		"FAIL\texample.com/rec/b\t0.028s",
		"?   \texample.com/rec/c\t[no test files]",
		"# example.com/rec/d [example.com/rec/d.test]",
		`d/d.go:2:23: cannot use "x" (untyped string constant) as int value in return statement`,
		"FAIL\texample.com/rec/d [build failed]",
		"",
		"3 skipped tests, with the reasons they gave:",
		"SKIP example.com/rec/a TestSkipsWithAReason: needs Node.js: not installed",
		"SKIP example.com/rec/a TestSubtests/skips: no network namespace here",
		"SKIP example.com/rec/b TestSkipsWithoutReason: (no reason given)",
		"",
	}, "\n")
	if got := out.String(); got != want {
		t.Errorf("report:\n%s\nwant:\n%s", got, want)
	}
}

// TestReportPassesOtherLinesThrough: what go test prints on stdout that
// is not an event (it is not JSON) reaches the reader unchanged.
func TestReportPassesOtherLinesThrough(t *testing.T) {
	var out bytes.Buffer
	r := newReport(&out)
	in := "go: warning: something\n{\"not\": \"an event\"}\nno newline at the end"
	if err := r.read(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if out.String() != in {
		t.Errorf("passed through %q, want %q", out.String(), in)
	}
}

// TestReportShowsWhatAnUnfinishedTestPrintedWhenItsPackageFails: a panic
// or a timeout ends the package while a test runs; that test never gets
// its own fail event, and its output is what says where.
func TestReportShowsWhatAnUnfinishedTestPrintedWhenItsPackageFails(t *testing.T) {
	events := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestHangs"}`,
		`{"Action":"output","Package":"p","Test":"TestHangs","Output":"=== RUN   TestHangs\n"}`,
		`{"Action":"output","Package":"p","Test":"TestHangs","Output":"panic: test timed out after 1s\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t1.0s\n"}`,
		`{"Action":"fail","Package":"p","Elapsed":1}`,
	}, "\n")
	var out bytes.Buffer
	r := newReport(&out)
	if err := r.read(strings.NewReader(events)); err != nil {
		t.Fatal(err)
	}
	r.summary()
	want := "panic: test timed out after 1s\nFAIL\tp\t1.0s\nno test skipped\n"
	if out.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestSkipReasonDropsTheFraming: the reason is what the test said, with
// neither go test's framing lines nor t.Skip's file:line prefix, and a
// reason of several lines is one line.
func TestSkipReasonDropsTheFraming(t *testing.T) {
	for _, c := range []struct {
		lines []string
		want  string
	}{
		{[]string{"=== RUN   TestX\n", "    x_test.go:12: needs nginx\n", "--- SKIP: TestX (0.00s)\n"}, "needs nginx"},
		{[]string{"    x_test.go:3: first\n", "        second\n"}, "first second"},
		{[]string{"    reason: not a file name\n"}, "reason: not a file name"},
		{[]string{"    x_test.go:abc: odd\n"}, "x_test.go:abc: odd"},
		{[]string{"--- SKIP: TestX (0.00s)\n"}, "(no reason given)"},
	} {
		if got := skipReason(c.lines); got != c.want {
			t.Errorf("skipReason(%q) = %q, want %q", c.lines, got, c.want)
		}
	}
}

// TestRunPassesArgumentsAndExitsWithGoTestsStatus runs a stand-in for go
// on PATH that records its arguments, prints the recording and exits 3.
func TestRunPassesArgumentsAndExitsWithGoTestsStatus(t *testing.T) {
	dir := t.TempDir()
	rec, err := filepath.Abs(filepath.Join("testdata", "go-test.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(dir, "args")
	script := "#!/bin/sh\necho \"$@\" > " + args + "\n/bin/cat " + rec + "\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-short", "./..."}, &stdout, &stderr); code != 3 {
		t.Errorf("exit status %d, want go test's 3 (stderr %q)", code, stderr.String())
	}
	got, err := os.ReadFile(args)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "test -json -short ./...\n" {
		t.Errorf("go ran with %q, want test -json -short ./...", got)
	}
	if !strings.Contains(stdout.String(), "SKIP example.com/rec/a TestSkipsWithAReason: needs Node.js: not installed\n") {
		t.Errorf("no skip summary in:\n%s", stdout.String())
	}
}
