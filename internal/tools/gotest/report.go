package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json's TestEvent, and the
// build events go test adds for a package that does not compile).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output, build-fail
	Test       string
	Output     string
}

// testKey names one test (or, with Test "", one package's own output).
type testKey struct{ pkg, test string }

// skip is one skipped test and the reason it gave.
type skip struct {
	pkg, test, reason string
}

// report turns go test's events into go test's usual short output, and
// collects the skips for the summary.
type report struct {
	w      io.Writer
	output map[testKey][]string // output of tests (and packages) not ended yet
	order  map[string][]string  // tests of each package in the order they started
	skips  []skip
}

func newReport(w io.Writer) *report {
	return &report{w: w, output: map[testKey][]string{}, order: map[string][]string{}}
}

// read handles every line of r until EOF. A line that is not an event (go
// test prints some errors on stdout) is passed through unchanged.
func (r *report) read(in io.Reader) error {
	br := bufio.NewReader(in)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var e event
			if bytes.HasPrefix(line, []byte("{")) && json.Unmarshal(line, &e) == nil && e.Action != "" {
				r.handle(e)
			} else {
				r.w.Write(line)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// handle applies one event.
func (r *report) handle(e event) {
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		io.WriteString(r.w, e.Output)
	case "run":
		r.order[e.Package] = append(r.order[e.Package], e.Test)
	case "output":
		r.output[k] = append(r.output[k], e.Output)
	case "fail":
		if e.Test == "" {
			r.packageFailed(e.Package)
			return
		}
		r.write(k)
	case "skip":
		if e.Test == "" {
			r.packageEnded(e.Package)
			return
		}
		r.skips = append(r.skips, skip{pkg: e.Package, test: e.Test, reason: skipReason(r.output[k])})
		delete(r.output, k)
	case "pass":
		if e.Test == "" {
			r.packageEnded(e.Package)
			return
		}
		delete(r.output, k)
	}
}

// write prints what k printed, without the "=== RUN" lines that go test
// shows only with -v, and forgets it.
func (r *report) write(k testKey) {
	for _, l := range r.output[k] {
		if !strings.HasPrefix(l, "=== ") {
			io.WriteString(r.w, l)
		}
	}
	delete(r.output, k)
}

// packageEnded prints a passing (or test-less) package's summary line, as
// go test does: its own output is shown only when it fails.
func (r *report) packageEnded(pkg string) {
	k := testKey{pkg, ""}
	for _, l := range r.output[k] {
		if strings.HasPrefix(l, "ok  ") || strings.HasPrefix(l, "?   ") {
			io.WriteString(r.w, l)
		}
	}
	r.forget(pkg)
}

// packageFailed prints a failed package's own output, after what its
// unfinished tests printed (a timeout or a panic ends a package while a
// test runs, and that test's output says where).
func (r *report) packageFailed(pkg string) {
	for _, t := range r.order[pkg] {
		r.write(testKey{pkg, t})
	}
	r.write(testKey{pkg, ""})
	r.forget(pkg)
}

func (r *report) forget(pkg string) {
	for _, t := range r.order[pkg] {
		delete(r.output, testKey{pkg, t})
	}
	delete(r.output, testKey{pkg, ""})
	delete(r.order, pkg)
}

// skipReason is what a skipped test said, without the framing lines go
// test adds ("=== RUN", "--- SKIP: ...") and the file:line prefix of
// t.Skip's message.
func skipReason(lines []string) string {
	var reason []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case t == "", strings.HasPrefix(t, "=== "), strings.HasPrefix(t, "--- SKIP"):
			continue
		}
		if file, msg, ok := strings.Cut(t, ": "); ok && isFileLine(file) {
			t = msg
		}
		reason = append(reason, t)
	}
	if len(reason) == 0 {
		return "(no reason given)"
	}
	return strings.Join(reason, " ")
}

// isFileLine reports whether s looks like "name_test.go:123".
func isFileLine(s string) bool {
	file, line, ok := strings.Cut(s, ".go:")
	if !ok || file == "" || line == "" || strings.ContainsAny(file, " \t") {
		return false
	}
	for _, c := range line {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// summary lists every skip, or says there were none.
func (r *report) summary() {
	if len(r.skips) == 0 {
		fmt.Fprintln(r.w, "no test skipped")
		return
	}
	fmt.Fprintf(r.w, "\n%d skipped %s, with the reasons they gave:\n", len(r.skips), plural(len(r.skips), "test", "tests"))
	for _, s := range r.skips {
		fmt.Fprintf(r.w, "SKIP %s %s: %s\n", s.pkg, s.test, s.reason)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
