package cli

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
)

// chunkWriter hands every write to the test, in order.
type chunkWriter struct{ chunks chan string }

func (w chunkWriter) Write(p []byte) (int, error) {
	w.chunks <- string(p)
	return len(p), nil
}

// nextChunk waits for the next write to w.
func nextChunk(t *testing.T, w chunkWriter) string {
	t.Helper()
	select {
	case c := <-w.chunks:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("audit --follow printed nothing")
		return ""
	}
}

// checkAligned fails unless every row's cells start where the header's
// column names do, and every time carries its zone's offset.
func checkAligned(t *testing.T, lines []string) {
	t.Helper()
	header := lines[0]
	var starts []int
	for _, col := range eventColumns {
		starts = append(starts, strings.Index(header, col))
	}
	zone := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d `)
	for _, l := range lines[1:] {
		if !zone.MatchString(l) {
			t.Errorf("row's time has no zone: %q", l)
		}
		for i, s := range starts[1:] {
			if len(l) <= s || l[s-1] != ' ' || l[s] == ' ' {
				t.Errorf("column %s does not start at %d in %q (header %q)", eventColumns[i+1], s, l, header)
			}
		}
	}
}

func TestAuditFollowStartsFromTheNewestRowsAndKeepsColumnsAligned(t *testing.T) {
	d, _ := startTestMesh(t) // three keys created and a policy applied: admin events
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	_, out, _ := run(t, env, "audit", "--kind", "admin", "--limit", "2", "--json")
	var newest []string // newest first
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit --json: %q: %v", out, err)
		}
		newest = append(newest, e.Action)
	}
	if len(newest) != 2 {
		t.Fatalf("audit --limit 2: %q", out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	w := chunkWriter{chunks: make(chan string, 16)}
	done := make(chan int)
	go func() {
		done <- Run(ctx, []string{"audit", "--follow", "--kind", "admin", "--limit", "2"},
			Env{Stdout: w, Stderr: w, Getenv: func(k string) string { return env[k] }})
	}()
	defer func() {
		cancel()
		<-done
	}()
	first := strings.Split(strings.TrimSuffix(nextChunk(t, w), "\n"), "\n")
	if len(first) != 3 || !strings.HasPrefix(first[0], "TIME") {
		t.Fatalf("audit --follow --limit 2 began with %d lines, want the header and the 2 newest:\n%s", len(first), strings.Join(first, "\n"))
	}
	// Oldest first, as tail -f: the newest event is the last line.
	slices.Reverse(newest)
	for i, action := range newest {
		if !strings.Contains(first[i+1], action) {
			t.Errorf("row %d = %q, want %s", i+1, first[i+1], action)
		}
	}

	// A new event arrives in a later batch, in the same columns.
	if code, _, errOut := run(t, env, "keys", "create", "--kind", "agent"); code != 0 {
		t.Fatalf("keys create: %s", errOut)
	}
	next := strings.Split(strings.TrimSuffix(nextChunk(t, w), "\n"), "\n")
	if len(next) != 1 || !strings.Contains(next[0], "keys.create") {
		t.Fatalf("the next batch: %q, want one keys.create row without a header", next)
	}
	checkAligned(t, append(first, next...))
}

func TestAuditRefusesAFilterThatCanMatchNothing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--src", "auditor"}, "agent:NAME"},
		{[]string{"--dst", "ledger"}, "tool:NAME"},
		{[]string{"--src", "agents:auditor"}, "agent:NAME"},
		{[]string{"--src", "tag:prod"}, "not tags"},
		{[]string{"--kind", "requests"}, "connection, request, admin, session, integrity"},
	} {
		// No coordinator needed: the filter is refused before any call.
		code, out, errOut := run(t, map[string]string{"AGENTMESH_STATE": t.TempDir()}, append([]string{"audit"}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("audit %v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	for _, ok := range [][]string{{"--src", "agent:auditor"}, {"--src", "spiffe://agentmesh.local/agent/auditor"}, {"--src", "tailnet:laptop.example.ts.net"}, {"--kind", "request"}} {
		if code, _, errOut := run(t, map[string]string{"AGENTMESH_STATE": t.TempDir()}, append([]string{"audit"}, ok...)...); code == 2 {
			t.Errorf("audit %v refused as a usage error: %s", ok, errOut)
		}
	}
}
