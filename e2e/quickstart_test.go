//go:build unix

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The quickstart test runs the README's "Quickstart: a real deployment" as
// written: the commands are read from README.md, not copied here, so the
// README cannot drift from what works.
//
// What it reads. In the section (up to the next "## " heading):
//   - Every ```sh block, in order. Each line that is not a comment is a
//     command; the "# " lines under a command are what it prints, matched
//     line by line, in order, against its terminal output (stdout and stderr
//     together): "…" stands for any text, a run of spaces for any run of
//     white space, and the ports of substitution 4 and 5 for any port.
//     A "# exit status N" line says the command fails with status N.
//   - The ```json block whose "command" is an agentmesh binary: the stdio
//     configuration of an MCP client, which the TypeScript SDK client then
//     uses as written.
//   - <!-- quickstart-test: ctrl-c NAME... --> markers: Ctrl-C in the shells
//     that run `agentmesh NAME` (SIGINT to the shell's process group, as a
//     terminal sends it); the shell's command must then exit cleanly.
//
// How it runs them. Each block runs in bash, one command at a time, stdin
// from /dev/null. A block whose last command keeps running (coordinator,
// serve, connect) gets a shell of its own, as the README says, and the test
// waits for the lines it shows; every other block runs in one shared shell,
// in order, which starts in the checkout's root. Every command that ends
// must exit with status 0. No output of any command may hold a Go stack
// trace ("goroutine ", "panic:").
//
// What it substitutes, each of which must occur in the README (so that a
// change there cannot quietly make this test check less):
//  1. "~/agentmesh-quickstart" (and "/home/me/agentmesh-quickstart" in the
//     JSON configuration) is a temporary directory.
//  2. "go build -o DEST ./cmd/agentmesh" copies the binary TestMain built
//     from this tree to DEST, instead of building it a second time.
//  3. "npx -y @modelcontextprotocol/server-filesystem" is the pinned copy of
//     that package in e2e/node_modules, run with node: no download.
//  4. The coordinator, which listens on 127.0.0.1:7443 unless told
//     otherwise, gets "--listen 127.0.0.1:0": a free port.
//  5. "--listen 127.0.0.1:7801" is "--listen 127.0.0.1:0": a free port; the
//     test reads the URL and the token file from what connect prints.
//  6. "KEYID" is the ID of a key in `keys list --json`.
//
// What it checks besides the commands: every command that sends connect
// an initialize request by hand (`echo "$INIT" | ./agentmesh connect ...`,
// to show what an MCP client receives when something goes wrong) printed
// one JSON-RPC error with a reason and a one-line message, and the
// TypeScript SDK client, running that connect command over stdio, is
// refused with the same code and reason; between them they show
// not_serving, unknown_service, gateway_unreachable and revoked, and an
// admin command fails saying the coordinator cannot be reached. When the
// connector serves, the
// TypeScript SDK client, over the HTTP endpoint (with the token from the
// file connect names) and over stdio (with the JSON configuration), sees
// the three tools the README names, reads shared/hello.txt, and has
// write_file refused by the gateway with -32040 not_granted, the file not
// written; both refusals reach the audit trail before the audit commands
// run (the test waits for them, as a person reading the README would wait
// the few seconds it says).

// quickstartTitle is the README section the test follows.
const quickstartTitle = "## Quickstart: a real deployment"

// qsItem is one thing the section asks for: a shell block, a client
// configuration, or Ctrl-C in some shells.
type qsItem struct {
	kind  string   // "sh", "json" or "ctrl-c"
	lines []string // the block's lines, or the shells' command names
}

var qsMarker = regexp.MustCompile(`^<!-- quickstart-test: ctrl-c ([a-z ]+) -->$`)

// readQuickstart returns the items of the README's quickstart section.
func readQuickstart(t *testing.T) []qsItem {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var items []qsItem
	in, fence := false, ""
	var block *qsItem
	indent := 0
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case line == quickstartTitle:
			in = true
			continue
		case !in:
			continue
		case block == nil && strings.HasPrefix(line, "## "):
			in = false
			continue
		}
		if block != nil {
			if trimmed == fence {
				items = append(items, *block)
				block = nil
				continue
			}
			if len(line) >= indent {
				line = line[indent:]
			}
			block.lines = append(block.lines, line)
			continue
		}
		if m := qsMarker.FindStringSubmatch(trimmed); m != nil {
			items = append(items, qsItem{kind: "ctrl-c", lines: strings.Fields(m[1])})
			continue
		}
		if info, ok := strings.CutPrefix(trimmed, "```"); ok && (info == "sh" || info == "json") {
			block, fence = &qsItem{kind: info}, "```"
			indent = len(line) - len(strings.TrimLeft(line, " "))
		}
	}
	if len(items) == 0 {
		t.Fatalf("README.md has no %q section with ```sh blocks", quickstartTitle)
	}
	return items
}

// qsCommand is one command of a sh block, the lines it shows and the exit
// status it ends with.
type qsCommand struct {
	line   string
	expect []string
	status int
}

// qsStatus is the "# " line that says a command fails: "# exit status N".
var qsStatus = regexp.MustCompile(`^# exit status (\d+)$`)

func commandsOf(lines []string) []qsCommand {
	var cmds []qsCommand
	for _, l := range lines {
		switch {
		case strings.TrimSpace(l) == "":
		case qsStatus.MatchString(l) && len(cmds) > 0:
			fmt.Sscanf(l, "# exit status %d", &cmds[len(cmds)-1].status)
		case strings.HasPrefix(l, "# ") && len(cmds) > 0:
			cmds[len(cmds)-1].expect = append(cmds[len(cmds)-1].expect, strings.TrimPrefix(l, "# "))
		case strings.HasPrefix(l, "#"):
		default:
			cmds = append(cmds, qsCommand{line: l})
		}
	}
	return cmds
}

// longRunning returns the agentmesh subcommand of a command that keeps
// running (coordinator, serve, connect), or "".
func longRunning(line string) string {
	f := strings.Fields(line)
	if len(f) > 1 && f[0] == "./agentmesh" && (f[1] == "coordinator" || f[1] == "serve" || f[1] == "connect") {
		return f[1]
	}
	return ""
}

// The ports the README shows, which the test replaces with free ones.
var qsPorts = []string{"7443", "7801"}

// expectLine compiles a "# " line of the README into a pattern for one
// line of output.
func expectLine(want string) *regexp.Regexp {
	var b strings.Builder
	for i, part := range strings.Split(want, "…") {
		if i > 0 {
			b.WriteString(".*")
		}
		q := regexp.QuoteMeta(part)
		for _, p := range qsPorts {
			q = strings.ReplaceAll(q, p, `\d+`)
		}
		q = regexp.MustCompile(` +`).ReplaceAllString(q, `\s+`)
		b.WriteString(q)
	}
	return regexp.MustCompile(`^\s*` + b.String() + `\s*$`)
}

// stackTrace reports whether out holds a Go panic or stack trace.
func stackTrace(out string) bool {
	return strings.Contains(out, "goroutine ") || strings.Contains(out, "panic:")
}

// qsShell is a bash process the test types commands into, as a person
// types into a terminal: stdout and stderr go to one place, in order.
type qsShell struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *lines
	exited chan struct{}
	n      int // commands typed, for the end-of-command markers
	seen   int // output lines already consumed by earlier commands
}

func newShell(t *testing.T, name, dir string, env []string) *qsShell {
	t.Helper()
	s := &qsShell{t: t, name: name, out: newLines(), exited: make(chan struct{})}
	s.cmd = exec.Command("bash", "--noprofile", "--norc")
	s.cmd.Dir, s.cmd.Env = dir, env
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.WaitDelay = stopGrace
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start bash: %v", err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.stdin.Close()
		s.interrupt()
		if t.Failed() {
			t.Logf("shell %s:\n%s", s.name, s.out)
		}
	})
	return s
}

// typeCommand sends one command, followed by a line that prints a marker
// with its exit status once it ends; it returns the marker's prefix.
func (s *qsShell) typeCommand(line string) string {
	s.n++
	marker := fmt.Sprintf("__quickstart_%d_exit", s.n)
	// A group with stdin from /dev/null: nothing the command starts can
	// read the commands typed after it.
	text := fmt.Sprintf("{ %s\n} </dev/null\nprintf '\\n%s %%d\\n' $?\n", line, marker)
	if _, err := io.WriteString(s.stdin, text); err != nil {
		s.t.Fatalf("shell %s: typing %q: %v", s.name, line, err)
	}
	return marker
}

// run types a command that ends and returns its output and exit status.
func (s *qsShell) run(line string) (string, int) {
	s.t.Helper()
	marker := s.typeCommand(line)
	var status int
	out, err := s.until(commandTimeout, func(l string) bool {
		n, _ := fmt.Sscanf(l, marker+" %d", &status)
		return n == 1
	})
	if err != nil {
		s.t.Fatalf("shell %s: %s: %v\n%s", s.name, line, err, out)
	}
	return out, status
}

// until waits for an output line that satisfies match and returns the
// output since the previous command's, without that line.
func (s *qsShell) until(timeout time.Duration, match func(string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		all, changed := s.out.snapshot()
		for i := s.seen; i < len(all); i++ {
			if match(all[i]) {
				out := strings.Join(all[s.seen:i], "\n")
				s.seen = i + 1
				return out, nil
			}
		}
		select {
		case <-changed:
		case <-s.exited:
			all, _ = s.out.snapshot()
			for i := s.seen; i < len(all); i++ {
				if match(all[i]) {
					out := strings.Join(all[s.seen:i], "\n")
					s.seen = i + 1
					return out, nil
				}
			}
			return strings.Join(all[s.seen:], "\n"), fmt.Errorf("the shell exited")
		case <-deadline.C:
			all, _ = s.out.snapshot()
			return strings.Join(all[s.seen:], "\n"), fmt.Errorf("no such line within %v", timeout)
		}
	}
}

// expect waits for each pattern, in order, in the output that follows.
func (s *qsShell) expect(want []string) {
	s.t.Helper()
	for _, w := range want {
		re := expectLine(w)
		if out, err := s.until(startTimeout, re.MatchString); err != nil {
			s.t.Fatalf("shell %s never showed %q: %v\noutput:\n%s", s.name, w, err, out)
		}
	}
}

// interrupt is Ctrl-C: SIGINT to the shell's process group (bash and what
// it runs). Anything left of the group after stopGrace is killed.
func (s *qsShell) interrupt() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(stopGrace):
		s.t.Errorf("shell %s did not exit within %v of Ctrl-C", s.name, stopGrace)
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
}

// qsSubst is one documented substitution (see the comment at the top).
type qsSubst struct {
	from, to string
	used     bool
}

// TestQuickstartAsWritten follows the README's quickstart; see above.
func TestQuickstartAsWritten(t *testing.T) {
	requireE2E(t)
	items := readQuickstart(t)
	checkout, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(t.TempDir(), "agentmesh-quickstart")
	server := filepath.Join(nodeModules, "@modelcontextprotocol/server-filesystem/dist/index.js")
	subst := []*qsSubst{
		{from: "~/agentmesh-quickstart", to: home},
		{from: "go build -o " + home + "/agentmesh ./cmd/agentmesh", to: "cp " + agentmeshBin + " " + home + "/agentmesh"},
		{from: "npx -y @modelcontextprotocol/server-filesystem", to: "node " + server},
		{from: "./agentmesh coordinator --data", to: "./agentmesh coordinator --listen 127.0.0.1:0 --data"},
		{from: "--listen 127.0.0.1:7801", to: "--listen 127.0.0.1:0"},
		{from: "/home/me/agentmesh-quickstart", to: home},
	}
	env := (&mesh{}).env()
	typing := newShell(t, "main", checkout, env)
	m := &mesh{t: t, admin: filepath.Join(home, "mesh", "admin")}
	shells := map[string]*qsShell{}
	var stdioConfig []string
	var denials []string
	refusals := map[string]bool{} // the reasons of the errors the README shows a client
	coordinatorDown := false

	for _, it := range items {
		switch it.kind {
		case "json":
			if strings.Contains(strings.Join(it.lines, "\n"), `"command"`) {
				stdioConfig = it.lines
			}
			continue
		case "ctrl-c":
			for _, name := range it.lines {
				s := shells[name]
				if s == nil {
					t.Fatalf("the README stops %q, which no earlier block started", name)
				}
				s.stdin.Close()
				s.interrupt()
				if out := s.out.String(); stackTrace(out) {
					t.Errorf("%s printed a stack trace:\n%s", name, out)
				}
				var status int
				if _, err := s.until(0, func(l string) bool {
					n, _ := fmt.Sscanf(l, fmt.Sprintf("__quickstart_%d_exit %%d", s.n), &status)
					return n == 1
				}); err != nil || status != 0 && status != 130 {
					t.Errorf("after Ctrl-C, %s ended with status %d (%v), want 0 or 130:\n%s", name, status, err, s.out)
				}
			}
			continue
		}
		cmds := commandsOf(it.lines)
		sh := typing
		if name := longRunning(cmds[len(cmds)-1].line); name != "" {
			sh = newShell(t, name, checkout, env)
			shells[name] = sh
		}
		for i, c := range cmds {
			line := c.line
			for _, s := range subst {
				if strings.Contains(line, s.from) {
					line, s.used = strings.ReplaceAll(line, s.from, s.to), true
				}
			}
			if strings.Contains(line, "KEYID") {
				line = strings.ReplaceAll(line, "KEYID", anyKeyID(m))
			}
			if sh != typing && i == len(cmds)-1 {
				// Keeps running: its shell shows the lines the README
				// shows, and the test goes on.
				sh.typeCommand(line)
				sh.expect(c.expect)
				continue
			}
			out, status := sh.run(line)
			if status != c.status || stackTrace(out) {
				t.Fatalf("%s\n(as run: %s)\nexit status %d (want %d), output:\n%s", c.line, line, status, c.status, out)
			}
			checkOutput(t, c, out)
			if c.status != 0 && strings.Contains(out, "cannot reach the coordinator at ") {
				coordinatorDown = true
			}
			if args, ok := strings.CutPrefix(line, qsHandInit); ok {
				refusals[refusedAsTheREADMESays(t, home, c, out, args)] = true
			}
		}
		if shells["connect"] == sh && sh != typing {
			denials = clientsAsTheREADMESays(t, m, home, sh.out.String(), stdioConfig, subst)
		}
	}
	for _, s := range subst {
		if !s.used {
			t.Errorf("the README no longer has %q, which the test substitutes: update the test's list", s.from)
		}
	}
	if len(denials) != 2 {
		t.Errorf("the client ran %d times, want twice (HTTP and stdio): does the README still start connect?", len(denials))
	}
	for _, why := range []string{"not_serving", "unknown_service", "gateway_unreachable", "revoked"} {
		if !refusals[why] {
			t.Errorf("the README no longer shows what a client gets for %s (have %v): its error cases are part of the quickstart", why, refusals)
		}
	}
	if !coordinatorDown {
		t.Errorf("the README no longer shows an admin command failing while the coordinator is down")
	}
	for name, s := range shells {
		if out := s.out.String(); stackTrace(out) {
			t.Errorf("%s printed a stack trace:\n%s", name, out)
		}
	}
}

// checkOutput checks that out shows c's expected lines, in order.
func checkOutput(t *testing.T, c qsCommand, out string) {
	t.Helper()
	got := strings.Split(out, "\n")
	for _, w := range c.expect {
		re := expectLine(w)
		for len(got) > 0 && !re.MatchString(got[0]) {
			got = got[1:]
		}
		if len(got) == 0 {
			t.Errorf("%s: the README shows %q; the terminal showed:\n%s", c.line, w, out)
			return
		}
		got = got[1:]
	}
}

// anyKeyID is substitution 6: the ID of a key the mesh has.
func anyKeyID(m *mesh) string {
	m.t.Helper()
	var keys []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(m.must("keys", "list", "--json", "--state", m.admin)), &keys); err != nil || len(keys) == 0 {
		m.t.Fatalf("keys list --json: %v (%d keys)", err, len(keys))
	}
	return keys[0].ID
}

var (
	qsServing = regexp.MustCompile(`connect: serving files at (http://127\.0\.0\.1:\d+/mcp)`)
	qsToken   = regexp.MustCompile(`connect: token in (\S+\.token):`)
)

// clientsAsTheREADMESays runs the TypeScript SDK client over the HTTP
// endpoint connect announced and over stdio with the README's JSON
// configuration, checks what the README says the client sees, waits for
// both refusals to reach the audit trail, and returns their event ids.
func clientsAsTheREADMESays(t *testing.T, m *mesh, home, connectOut string, config []string, subst []*qsSubst) []string {
	t.Helper()
	url := qsServing.FindStringSubmatch(connectOut)
	tokenFile := qsToken.FindStringSubmatch(connectOut)
	if url == nil || tokenFile == nil {
		t.Fatalf("connect did not say where it serves and where its token is:\n%s", connectOut)
	}
	token := localToken(t, filepath.Join(home, tokenFile[1]), filepath.Join(home, "reader"))

	text := strings.Join(config, "\n")
	for _, s := range subst {
		if strings.Contains(text, s.from) {
			text, s.used = strings.ReplaceAll(text, s.from, s.to), true
		}
	}
	var cfg struct {
		MCPServers map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
		} `json:"mcpServers"`
	}
	if err := json.Unmarshal([]byte(text), &cfg); err != nil || len(cfg.MCPServers) != 1 {
		t.Fatalf("the README's stdio configuration %s: %v", text, err)
	}
	var stdio clientSpec
	for _, s := range cfg.MCPServers {
		stdio = clientSpec{Transport: "stdio", Command: s.Command, Args: s.Args}
	}

	hello := filepath.Join(home, "shared", "hello.txt")
	written := filepath.Join(home, "shared", "new.txt")
	steps := []step{
		{Op: "listTools"},
		{Op: "callTool", Name: "read_text_file", Arguments: map[string]any{"path": hello}},
		{Op: "callTool", Name: "write_file", Arguments: map[string]any{"path": written, "content": "x"}},
	}
	var ids []string
	for _, spec := range []clientSpec{httpClient(url[1], token), stdio} {
		spec.Steps = steps
		out := runClient(t, spec)
		r := out.Results
		names := toolNames(t, r[0])
		if len(names) != 3 || !names["read_text_file"] || !names["list_directory"] || !names["get_file_info"] {
			t.Errorf("%s: the client sees the tools %v, want read_text_file, list_directory and get_file_info", spec.Transport, names)
		}
		if got := texts(t, r[1]); got != "hello from the mesh\n" {
			t.Errorf("%s: read_text_file shared/hello.txt returned %q", spec.Transport, got)
		}
		id := policyDenial(t, r[2], "not_granted")
		if _, err := os.Stat(written); !os.IsNotExist(err) {
			t.Errorf("%s: the refused write_file wrote the file (stat: %v)", spec.Transport, err)
		}
		if stackTrace(out.Raw) {
			t.Errorf("%s: the client's output holds a stack trace:\n%s", spec.Transport, out.Raw)
		}
		// The next client's events are recorded after this refusal is
		// stored, so they ship in a later batch: once they are stored
		// too, the gateway holds a receipt (README step 8 verifies it).
		m.waitAudit(id)
		ids = append(ids, id)
	}
	return ids
}

// qsHandInit starts a README command that sends connect an MCP initialize
// request by hand, to show what an MCP client receives.
const qsHandInit = `echo "$INIT" | ./agentmesh `

// refusedAsTheREADMESays checks a README command that sent connect (with
// args) an initialize request by hand: the terminal shows one JSON-RPC
// error with a reason and a one-line message, and the TypeScript SDK
// client, configured with the same command over stdio, is refused with the
// same code and reason. It returns the reason.
func refusedAsTheREADMESays(t *testing.T, home string, c qsCommand, out, args string) string {
	t.Helper()
	var resp struct {
		ID    int       `json:"id"`
		Error *rpcError `json:"error"`
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, `{"jsonrpc"`) {
			if err := json.Unmarshal([]byte(l), &resp); err != nil {
				t.Fatalf("%s: the answer %q is not JSON-RPC: %v", c.line, l, err)
			}
		}
	}
	e := resp.Error
	switch {
	case e == nil:
		t.Fatalf("%s: connect answered no JSON-RPC error:\n%s", c.line, out)
	case e.Data.Reason == "" || e.Message == "" || strings.Contains(e.Message, "\n") || resp.ID != 1:
		t.Fatalf("%s: the error %+v (id %d) lacks a reason or a one-line message for request 1", c.line, *e, resp.ID)
	}
	spec := clientSpec{Transport: "stdio", Command: filepath.Join(home, "agentmesh"), Args: strings.Fields(args), Cwd: home}
	got := runClientMayFail(t, spec)
	switch {
	case got.ConnectError == nil:
		t.Errorf("%s: the TypeScript SDK client connected, want refused with %d %s", c.line, e.Code, e.Data.Reason)
	case got.ConnectError.Code != e.Code || got.ConnectError.Data.Reason != e.Data.Reason:
		t.Errorf("%s: the TypeScript SDK client was refused with %d %q, the terminal showed %d %q",
			c.line, got.ConnectError.Code, got.ConnectError.Data.Reason, e.Code, e.Data.Reason)
	}
	if stackTrace(got.Raw) {
		t.Errorf("%s: the client's output holds a stack trace:\n%s", c.line, got.Raw)
	}
	return e.Data.Reason
}
