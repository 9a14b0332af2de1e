//go:build unix

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// Bounds on waiting for external processes, which give no other signal
// than their output. They are generous: the machine may be busy.
const (
	startTimeout   = 60 * time.Second // a coordinator or gateway to say it serves
	commandTimeout = 60 * time.Second // one CLI command or client.mjs run
	auditTimeout   = 30 * time.Second // events to reach the coordinator's store
)

var (
	// agentmeshBin is the binary TestMain built; empty when skipping.
	agentmeshBin string
	// skipReason, when set, is why every test in the package skips.
	skipReason string
	// nodeModules is e2e/node_modules, absolute.
	nodeModules string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	skipReason = prerequisites()
	if skipReason != "" {
		// Shown by go test -v, and whenever the package fails; a passing
		// package in `go test ./...` shows only its ok line.
		fmt.Fprintln(os.Stderr, "e2e: the end-to-end tests are skipped:", skipReason)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "agentmesh-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	agentmeshBin = filepath.Join(dir, "agentmesh")
	build := exec.Command("go", "build", "-o", agentmeshBin, "../cmd/agentmesh")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/agentmesh: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	pgtest.StopShared()
	if code == 0 {
		// The helpers own goroutines (process waiters); none may outlive
		// the tests.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: leaked goroutines:", err)
			return 1
		}
	}
	return code
}

// prerequisites says why the end-to-end tests cannot run here, or "".
// With Node.js and npm present and e2e/node_modules missing, it installs
// the pinned packages first (npm ci: exactly package-lock.json), so that
// the README's test command runs everything on a fresh clone; a failed
// install fails the run rather than skipping the tests.
func prerequisites() string {
	if testing.Short() {
		return "they build the binary and run Node.js MCP servers; -short leaves them out"
	}
	if _, err := exec.LookPath("node"); err != nil {
		return "Node.js is not installed (they run the MCP servers and the TypeScript SDK client with node 20 or later; .ci/run installs everything)"
	}
	abs, err := filepath.Abs("node_modules")
	if err != nil {
		return err.Error()
	}
	nodeModules = abs
	if missing := missingPackage(); missing != "" {
		if _, err := exec.LookPath("npm"); err != nil {
			return fmt.Sprintf("e2e/node_modules lacks %s and npm is not installed to fetch it", missing)
		}
		fmt.Fprintln(os.Stderr, "e2e: installing the pinned npm packages (npm ci --prefix e2e), once")
		install := exec.Command("npm", "ci", "--prefix", ".", "--no-audit", "--no-fund")
		if out, err := install.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: npm ci --prefix e2e --no-audit --no-fund: %v\n%s", err, out)
			os.Exit(1)
		}
		if missing := missingPackage(); missing != "" {
			fmt.Fprintf(os.Stderr, "e2e: npm ci succeeded, yet e2e/node_modules lacks %s\n", missing)
			os.Exit(1)
		}
	}
	return ""
}

// missingPackage names a package file the tests need that e2e/node_modules
// lacks, or returns "".
func missingPackage() string {
	for _, p := range []string{
		"@modelcontextprotocol/sdk/package.json",
		"@modelcontextprotocol/server-everything/dist/index.js",
		"@modelcontextprotocol/server-filesystem/dist/index.js",
		"openai/package.json",
		"@modelcontextprotocol/conformance/dist/index.js",
		"undici/package.json",
	} {
		if _, err := os.Stat(filepath.Join(nodeModules, p)); err != nil {
			return p
		}
	}
	return ""
}

func requireE2E(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// mesh is a coordinator in a temporary directory plus the nodes, gateways
// and connectors a test adds; everything stops when the test ends.
type mesh struct {
	t     *testing.T
	dir   string
	admin string // the admin identity's state directory
	coord *proc
	// coordAddr is where the coordinator listens: a free port the first
	// start got from the kernel, taken again by a restart, since nodes
	// know the coordinator by its URL.
	coordAddr string
	// coordArgs are more arguments of every coordinator start.
	coordArgs []string
}

// newMesh starts a coordinator on a free loopback port.
func newMesh(t *testing.T) *mesh {
	t.Helper()
	requireE2E(t)
	m := &mesh{t: t, dir: t.TempDir()}
	m.startCoordinator("127.0.0.1:0")
	return m
}

// newMeshArgs is newMesh with more arguments for the coordinator; dir is
// the directory they may name files in (the mesh's own).
func newMeshArgs(t *testing.T, args func(dir string) []string) *mesh {
	t.Helper()
	requireE2E(t)
	m := &mesh{t: t, dir: t.TempDir()}
	m.coordArgs = args(m.dir)
	m.startCoordinator("127.0.0.1:0")
	return m
}

// startCoordinator starts the mesh's coordinator listening on addr and
// waits until it serves.
func (m *mesh) startCoordinator(addr string) {
	t := m.t
	t.Helper()
	argv := append([]string{agentmeshBin, "coordinator", "--data", filepath.Join(m.dir, "coord"), "--listen", addr}, m.coordArgs...)
	co := startServer(t, "coordinator", argv, m.env())
	s, err := co.waitServing(startTimeout)
	if err != nil {
		t.Fatalf("coordinator did not start serving: %v", err)
	}
	if s.Component != "coordinator" || s.AdminState == "" || !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("coordinator announced %+v", s)
	}
	m.admin, m.coord, m.coordAddr = s.AdminState, co, s.Addr
}

// stopCoordinator stops the coordinator as Ctrl-C would.
func (m *mesh) stopCoordinator() { m.coord.stop(m.t) }

// startCoordinatorAgain starts the stopped coordinator on its old address
// with its old data.
func (m *mesh) startCoordinatorAgain() { m.startCoordinator(m.coordAddr) }

// env is the environment of every agentmesh process: the test's own,
// without an AGENTMESH_STATE that could point at a real mesh.
func (m *mesh) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTMESH_STATE=") {
			env = append(env, kv)
		}
	}
	return env
}

// run runs one agentmesh command to completion and returns its stdout,
// stderr and exit status.
func (m *mesh) run(args ...string) (string, string, int) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentmeshBin, args...)
	cmd.Env = m.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			m.t.Fatalf("agentmesh %s: %v (%v)\n%s", strings.Join(args, " "), err, ctx.Err(), errb.String())
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

// must runs one agentmesh command that has to succeed and returns its stdout.
func (m *mesh) must(args ...string) string {
	m.t.Helper()
	out, errOut, code := m.run(args...)
	if code != 0 {
		m.t.Fatalf("agentmesh %s: exit status %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// join creates a single-use key of kind with tags and joins a node named
// name with it; it returns the node's state directory.
func (m *mesh) join(kind, name, tags string) string {
	m.t.Helper()
	key := strings.TrimSpace(m.must("keys", "create", "--kind", kind, "--tags", tags, "--state", m.admin))
	state := filepath.Join(m.dir, name)
	m.must("join", "--authkey", key, "--name", name, "--state", state)
	return state
}

// applyPolicy writes text to a file and applies it.
func (m *mesh) applyPolicy(text string) {
	m.t.Helper()
	file := filepath.Join(m.dir, "policy.hujson")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.must("policy", "apply", file, "--state", m.admin)
}

// serve starts a gateway for the node in state in front of the stdio MCP
// server upstream and waits until it serves.
func (m *mesh) serve(name, state string, upstream ...string) *proc {
	m.t.Helper()
	argv := append([]string{agentmeshBin, "serve", "--state", state, "--listen", "127.0.0.1:0", "--"}, upstream...)
	p := startServer(m.t, "gateway "+name, argv, m.env())
	s, err := p.waitServing(startTimeout)
	if err != nil {
		m.t.Fatalf("gateway %s did not start serving: %v", name, err)
	}
	if s.Component != "gateway" || s.API != "mcp" || !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		m.t.Fatalf("gateway %s announced %+v", name, s)
	}
	return p
}

// serveURL starts a gateway for the node in state in front of the
// Streamable HTTP MCP server at url and waits until it serves.
func (m *mesh) serveURL(name, state, url string) *proc {
	m.t.Helper()
	p := startServer(m.t, "gateway "+name, []string{agentmeshBin, "serve", "--state", state, "--listen", "127.0.0.1:0", "--upstream", url}, m.env())
	if _, err := p.waitServing(startTimeout); err != nil {
		m.t.Fatalf("gateway %s did not start serving: %v", name, err)
	}
	return p
}

// connectHTTP starts `agentmesh connect service --listen 127.0.0.1:0` and
// returns the local Streamable HTTP URL it serves and the endpoint's bearer
// token, read from the file it names.
func (m *mesh) connectHTTP(service, state string) (url, token string) {
	m.t.Helper()
	p := startServer(m.t, "connect "+service, []string{agentmeshBin, "connect", service, "--state", state, "--listen", "127.0.0.1:0"}, m.env())
	s, err := p.waitServing(startTimeout)
	if err != nil {
		m.t.Fatalf("connector did not start serving: %v", err)
	}
	if s.Component != "connector" || s.Service != service || !strings.HasPrefix(s.URL, "http://127.0.0.1:") || !strings.HasSuffix(s.URL, "/mcp") {
		m.t.Fatalf("connector announced %+v, want http://127.0.0.1:PORT/mcp", s)
	}
	return s.URL, localToken(m.t, s.TokenFile, state)
}

// localToken reads the bearer token of a local endpoint from file, which
// must be in the state directory with mode 0600.
func localToken(t *testing.T, file, state string) string {
	t.Helper()
	fi, err := os.Stat(file)
	if err != nil || filepath.Dir(file) != filepath.Clean(state) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s (%v): want mode 0600 in %s", file, err, state)
	}
	b, err := os.ReadFile(file)
	if err != nil || len(b) < 40 {
		t.Fatalf("token file %s holds %d bytes: %v", file, len(b), err)
	}
	return string(b)
}

// event is the part of an audit event the tests look at.
type event struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Method   string `json:"method"`
	Tool     string `json:"tool"`
	Resource string `json:"resource"`
	Prompt   string `json:"prompt"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
}

// waitAudit follows the audit trail until every event id in ids has reached
// the coordinator (gateways ship their events asynchronously), then returns
// the whole trail as `agentmesh audit --json` prints it. A gateway's spool
// ships in order, so the events it recorded before those have arrived too.
func (m *mesh) waitAudit(ids ...string) []event {
	m.t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		if id == "" {
			m.t.Fatal("waitAudit: empty event id (the JSON-RPC error carried no data.event_id)")
		}
		want[id] = true
	}
	f := startProc(m.t, "audit --follow", []string{agentmeshBin, "audit", "--follow", "--limit", "0", "--json", "--state", m.admin}, m.env())
	_, err := f.waitLine(f.stdout, auditTimeout, func(l string) bool {
		var e event
		if json.Unmarshal([]byte(l), &e) == nil {
			delete(want, e.ID)
		}
		return len(want) == 0
	})
	f.stop(m.t)
	if err != nil {
		m.t.Fatalf("audit events %v never reached the coordinator: %v", keys(want), err)
	}
	out := m.must("audit", "--json", "--limit", "0", "--state", m.admin)
	var events []event
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			m.t.Fatalf("agentmesh audit --json printed %q: %v", l, err)
		}
		events = append(events, e)
	}
	return events
}

// awaitEchoesOnce waits (audit --follow) until want allowed echo calls
// from src are in the trail, then checks that it holds exactly want, and
// that audit verify passes.
func (m *mesh) awaitEchoesOnce(src string, want int) {
	t := m.t
	t.Helper()
	f := startProc(t, "audit --follow", []string{agentmeshBin, "audit", "--follow", "--limit", "0", "--json", "--tool", "echo", "--state", m.admin}, m.env())
	seen := 0
	if _, err := f.waitLine(f.stdout, auditTimeout, func(l string) bool {
		var e event
		if json.Unmarshal([]byte(l), &e) == nil && e.Decision == "allow" && e.Src == src {
			seen++
		}
		return seen >= want
	}); err != nil {
		t.Fatalf("%d of %d allowed echo calls reached the coordinator: %v", seen, want, err)
	}
	f.stop(t)
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(m.must("audit", "--json", "--tool", "echo", "--decision", "allow", "--limit", "0", "--state", m.admin)), "\n") {
		var e event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit --json printed %q: %v", l, err)
		}
		if e.Src == src {
			n++
		}
	}
	if n != want {
		t.Fatalf("the trail holds %d allowed echo calls, want exactly %d", n, want)
	}
	m.verifyAudit()
}

// verifyAudit checks that `agentmesh audit verify` accepts the hash chain.
func (m *mesh) verifyAudit() {
	m.t.Helper()
	out, errOut, code := m.run("audit", "verify", "--state", m.admin)
	if code != 0 {
		m.t.Fatalf("agentmesh audit verify: exit status %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// step is one operation of client.mjs.
type step struct {
	Op        string         `json:"op"`
	Name      string         `json:"name,omitempty"`
	Arguments map[string]any `json:"arguments,omitempty"`
	URI       string         `json:"uri,omitempty"`
	Progress  bool           `json:"progress,omitempty"`
	// TimeoutMs is the SDK's request timeout for the step (default 30 s).
	TimeoutMs int `json:"timeoutMs,omitempty"`
}

// clientSpec is client.mjs's input.
type clientSpec struct {
	Transport string   `json:"transport"`
	Command   string   `json:"command,omitempty"`
	Args      []string `json:"args,omitempty"`
	Cwd       string   `json:"cwd,omitempty"` // stdio: the command's working directory
	URL       string   `json:"url,omitempty"`
	// Headers go with every HTTP request, through the SDK's requestInit.
	Headers map[string]string `json:"headers,omitempty"`
	// Elicitation, if set, declares form elicitation and answers every
	// elicitation/create with this action.
	Elicitation string `json:"elicitation,omitempty"`
	Steps       []step `json:"steps"`
}

// rpcError is a JSON-RPC error as the TypeScript SDK reports it.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    struct {
		Reason  string `json:"reason"`
		EventID string `json:"event_id"`
	} `json:"data"`
}

// stepResult is client.mjs's output for one step.
type stepResult struct {
	Op       string          `json:"op"`
	Result   json.RawMessage `json:"result"`
	Error    *rpcError       `json:"error"`
	Progress []struct {
		Progress float64 `json:"progress"`
		Total    float64 `json:"total"`
	} `json:"progress"`
	// WireProgressBeforeResult counts the progress notifications that
	// reached the client's transport before the step's response.
	WireProgressBeforeResult int `json:"wireProgressBeforeResult"`
}

// lateProgress starts the TypeScript SDK's complaint about a progress
// notification it handles after its request's result. The SDK dispatches a
// notification in a microtask but a response at once, so when the last
// progress notification and the result arrive in one read (as they do over
// stdio when a server sends them back to back) it drops the notification,
// with or without agentmesh in between. Tests check the order on the wire
// (stepResult.WireProgressBeforeResult) instead.
const lateProgress = "Received a progress notification for an unknown token"

// clientOutput is what client.mjs prints.
type clientOutput struct {
	Server struct {
		Name string `json:"name"`
	} `json:"server"`
	Results []stepResult `json:"results"`
	// ProtocolErrors are the client's errors outside any request, such as
	// a line on the connector's stdout that is not a JSON-RPC message.
	ProtocolErrors []string `json:"protocolErrors"`
	// ConnectError is set when the client could not connect at all.
	ConnectError *rpcError `json:"connectError"`
	// Elicitations are the params of each elicitation/create the client
	// was sent (with clientSpec.Elicitation set).
	Elicitations []struct {
		Message string `json:"message"`
	} `json:"elicitations"`
	Raw string `json:"-"`
}

// runClient runs client.mjs with spec and returns its results, one per step.
func runClient(t *testing.T, spec clientSpec) clientOutput {
	t.Helper()
	res := runClientMayFail(t, spec)
	if res.ConnectError != nil {
		t.Fatalf("client.mjs (%s) could not connect: %+v\n%s", spec.Transport, *res.ConnectError, res.Raw)
	}
	return res
}

// runClientMayFail is runClient for a client that may be refused: a failure
// to connect is returned in ConnectError.
func runClientMayFail(t *testing.T, spec clientSpec) clientOutput {
	t.Helper()
	_, wait := startClient(t, spec)
	return wait()
}

// startClient starts client.mjs with spec in the background and returns
// it (its stderr, where it reports progress as it arrives, can be
// followed with waitLine) and a function that waits for it and reads its
// results as runClientMayFail does; call that from the test's goroutine.
// The process (and the connector it may spawn) is stopped when the test
// ends.
func startClient(t *testing.T, spec clientSpec) (*proc, func() clientOutput) {
	t.Helper()
	in, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "client.mjs", []string{"node", "client.mjs", string(in)}, os.Environ())
	var res *clientOutput
	return p, func() clientOutput {
		t.Helper()
		if res == nil {
			select {
			case <-p.exited:
			case <-time.After(commandTimeout):
				t.Fatalf("client.mjs did not finish within %v", commandTimeout)
			}
			out, errb := bytes.NewBufferString(p.stdout.String()), bytes.NewBufferString(p.stderr.String())
			r := readClient(t, spec, p.waitErr, out, errb)
			res = &r
		}
		return *res
	}
}

// readClient reads what client.mjs printed once it exited with runErr.
func readClient(t *testing.T, spec clientSpec, runErr error, out, errb *bytes.Buffer) clientOutput {
	t.Helper()
	var res clientOutput
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("client.mjs printed %q: %v (exit: %v)\nstderr: %s", out.String(), err, runErr, errb.String())
	}
	res.Raw = out.String() + errb.String()
	if res.ConnectError != nil {
		return res
	}
	if runErr != nil {
		t.Fatalf("node client.mjs (%s): %v\nstdout: %s\nstderr: %s", spec.Transport, runErr, out.String(), errb.String())
	}
	if len(res.Results) != len(spec.Steps) {
		t.Fatalf("client.mjs returned %d results for %d steps: %s", len(res.Results), len(spec.Steps), out.String())
	}
	for _, e := range res.ProtocolErrors {
		if strings.HasPrefix(e, lateProgress) {
			t.Logf("client.mjs (%s): %s", spec.Transport, e)
			continue
		}
		t.Errorf("client.mjs (%s) saw a protocol error: %s", spec.Transport, e)
	}
	return res
}

// stdioClient is a client.mjs spec that spawns `agentmesh connect` itself.
func stdioClient(service, state string, steps ...step) clientSpec {
	return clientSpec{Transport: "stdio", Command: agentmeshBin, Args: []string{"connect", service, "--state", state}, Steps: steps}
}

// httpClient is a client.mjs spec for a connector's local HTTP endpoint,
// sending token as its bearer token ("" sends none).
func httpClient(url, token string, steps ...step) clientSpec {
	spec := clientSpec{Transport: "http", URL: url, Steps: steps}
	if token != "" {
		spec.Headers = map[string]string{"Authorization": "Bearer " + token}
	}
	return spec
}

// toolNames lists the names in a tools/list result.
func toolNames(t *testing.T, r stepResult) map[string]bool {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("tools/list failed: %+v", *r.Error)
	}
	var res struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatalf("tools/list result %s: %v", r.Result, err)
	}
	names := map[string]bool{}
	for _, tl := range res.Tools {
		names[tl.Name] = true
	}
	return names
}

// texts joins the text of every content item of a tools/call, prompts/get
// or resources/read result.
func texts(t *testing.T, r stepResult) string {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("%s failed: %+v", r.Op, *r.Error)
	}
	var res struct {
		IsError  bool                    `json:"isError"`
		Content  []struct{ Text string } `json:"content"`
		Contents []struct{ Text string } `json:"contents"`
		Messages []struct {
			Content struct{ Text string } `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatalf("%s result %s: %v", r.Op, r.Result, err)
	}
	if res.IsError {
		t.Fatalf("%s returned a tool error: %s", r.Op, r.Result)
	}
	var b strings.Builder
	for _, c := range res.Content {
		b.WriteString(c.Text)
	}
	for _, c := range res.Contents {
		b.WriteString(c.Text)
	}
	for _, m := range res.Messages {
		b.WriteString(m.Content.Text)
	}
	return b.String()
}

// policyDenial checks that r failed with the gateway's policy error -32040
// carrying reason and an audit event id, and returns that id.
func policyDenial(t *testing.T, r stepResult, reason string) string {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("%s succeeded, want JSON-RPC error -32040 (%s): %s", r.Op, reason, r.Result)
	}
	if r.Error.Code != -32040 || r.Error.Data.Reason != reason || r.Error.Data.EventID == "" {
		t.Fatalf("%s failed with %+v, want code -32040, data.reason %q and data.event_id", r.Op, *r.Error, reason)
	}
	return r.Error.Data.EventID
}

// findEvent returns the event with id.
func findEvent(t *testing.T, events []event, id string) event {
	t.Helper()
	for _, e := range events {
		if e.ID == id {
			return e
		}
	}
	t.Fatalf("the audit trail has no event %s", id)
	return event{}
}
