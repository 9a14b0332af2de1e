package main

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
)

// TestAgentCallsLibraryServerInAnotherProcess runs the two examples as
// they are meant to run: the server (built, in a process of its own,
// joining with an auth key) and this agent, against a real coordinator
// with real TLS and no proxy in between. The policy grants echo only.
func TestAgentCallsLibraryServerInAnotherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server example")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := coordinatortest.Start(t, coordinatortest.Options{})
	m.ApplyPolicy(`{"grants": [{"src": ["agent:fraud"], "dst": ["tool:ledger"], "tools": ["echo"]}]}`)
	agentState := m.Join("agent", "fraud")

	bin := filepath.Join(t.TempDir(), "server")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../server").CombinedOutput(); err != nil {
		t.Fatalf("go build ../server: %v\n%s", err, out)
	}
	key := m.Key(controlapi.KeyCreateRequest{Kind: "tool"})
	srv := exec.Command(bin, "-state", filepath.Join(t.TempDir(), "ledger"), "-authkey", key, "-name", "ledger")
	var stderr bytes.Buffer
	srv.Stderr = &stderr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		if err := srv.Wait(); err != nil {
			t.Errorf("server: %v\n%s", err, stderr.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "serving https://127.0.0.1:") {
		t.Fatalf("server's first line %q (%v)\n%s", line, err, stderr.String())
	}

	tests := []struct {
		args []string
		want *regexp.Regexp
	}{
		{[]string{"-tool", "echo", "-args", `{"text":"no hop"}`}, regexp.MustCompile(`(?m)^tools: echo\necho: no hop\n$`)},
		{[]string{"-tool", "add", "-args", `{"a":1,"b":2}`}, regexp.MustCompile(`(?m)^add: refused: not_granted \(audit event [0-9a-f]+\)$`)},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if err := run(ctx, append([]string{"-state", agentState, "-service", "ledger"}, tt.args...), &out); err != nil {
			t.Fatalf("agent %v: %v", tt.args, err)
		}
		if !tt.want.MatchString(out.String()) {
			t.Errorf("agent %v printed %q, want %s", tt.args, out.String(), tt.want)
		}
	}
}
