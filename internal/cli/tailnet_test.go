package cli

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/demo"
	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
	"github.com/agentmesh/agentmesh/internal/tailnet/tailnettest"
)

// lineWaiter is an io.Writer that hands each complete line matching re to
// a channel, so a test can wait for a command's banner.
type lineWaiter struct {
	re    *regexp.Regexp
	found chan []string
	mu    sync.Mutex
	buf   []byte
}

func newLineWaiter(re string) *lineWaiter {
	return &lineWaiter{re: regexp.MustCompile(re), found: make(chan []string, 4)}
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := slices.Index(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if m := w.re.FindStringSubmatch(line); m != nil {
			select {
			case w.found <- m:
			default:
			}
		}
	}
}

// wait returns the first matching line's submatches.
func (w *lineWaiter) wait(t *testing.T, ctx context.Context, what string) []string {
	t.Helper()
	select {
	case m := <-w.found:
		return m
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
		return nil
	}
}

// startCommand runs the agentmesh command args in the background until the
// test ends, with stdout and stderr going to the writers given.
func startCommand(t *testing.T, ctx context.Context, stdout, stderr io.Writer, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, args, Env{Stdout: stdout, Stderr: stderr, Getenv: func(string) string { return "" }})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("agentmesh %s exited %d", strings.Join(args, " "), code)
		}
	})
}

// TestServeAndConnectOverTailnet runs 'agentmesh serve --tailnet' and
// 'agentmesh connect --tailnet' on tailscale's test control server: an MCP
// client through the tailnet connector reaches the gateway, which enforces
// this mesh's policy on the tailnet identity (and, on a second gateway, the
// tailnet's app capabilities) and ships the decisions to the coordinator.
func TestServeAndConnectOverTailnet(t *testing.T) {
	if !tailnettest.InLoopbackNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn := tailnettest.New(t)
	tn.SetCaps(`{"tools": ["history"]}`)

	dir := t.TempDir()
	d := &demo.Mesh{Dir: dir, Log: testLogger(t)}
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(dir, "coordinator"), Listen: "127.0.0.1:0", Logger: d.Log})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	d.Coordinator = co
	if d.Admin, err = d.Client(co.AdminDir()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ name, kind string }{{"ledger", "tool"}, {"ledger-caps", "tool"}, {"llm", "model"}} {
		name := n.name
		var resp controlapi.KeyCreateResponse
		if err := d.Admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: n.kind}, &resp); err != nil {
			t.Fatal(err)
		}
		if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: resp.Key, Name: name, State: filepath.Join(dir, name)}); err != nil {
			t.Fatal(err)
		}
	}
	// Tailnet callers are matched by their tailnet node name and tags.
	if _, err := d.ApplyPolicy(ctx, `{"grants": [
		{"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance", "history"]},
		{"src": ["agent:teller"], "dst": ["model:llm"], "models": ["gpt-4o-mini"]},
	]}`); err != nil {
		t.Fatal(err)
	}
	up, err := d.StartLedger()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		d.Close()
	}()

	models := httptest.NewServer(&modelgwtest.Server{})
	defer models.Close()
	serveAt := func(name string, extra ...string) {
		banner := newLineWaiter(`serving (MCP|the model API) on the tailnet at (http://\S+)`)
		upstream := up
		if name == "llm" {
			upstream = models.URL
		}
		args := append([]string{"serve", "--state", filepath.Join(dir, name), "--tailnet", "--ts-control-url", tn.URL,
			"--upstream", upstream}, extra...)
		startCommand(t, ctx, banner, io.Discard, args...)
		banner.wait(t, ctx, "serve --tailnet banner")
	}
	serveAt("ledger")
	serveAt("ledger-caps", "--tailnet-policy", "tailnet")
	serveAt("llm")

	// Callers are tagged tailnet nodes: a tagged node's name stands for it
	// (agent:NAME); an untagged one's would not. They have no state
	// directory for a local token; the test's own clients are the only
	// ones on this namespace's loopback.
	local := func(caller, service string) string {
		banner := newLineWaiter(`connect: serving \S+ at (http://\S+)`)
		startCommand(t, ctx, io.Discard, banner, "connect", service, "--tailnet", "--ts-control-url", tn.URL,
			"--ts-hostname", caller, "--ts-tags", "tag:agents", "--ts-state", filepath.Join(dir, "ts-"+caller+"-"+strings.ReplaceAll(service, ":", "-")), "--listen", "127.0.0.1:0", "--no-token")
		return banner.wait(t, ctx, "connect --tailnet banner")[1]
	}
	tryConnect := func(caller, service string) (*mcp.ClientSession, error) {
		url := local(caller, service)
		cs, err := mcp.NewClient(&mcp.Implementation{Name: caller, Version: "test"}, nil).Connect(ctx,
			&mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, nil)
		if err == nil {
			t.Cleanup(func() { cs.Close() })
		}
		return cs, err
	}
	connectAs := func(caller, service string) *mcp.ClientSession {
		cs, err := tryConnect(caller, service)
		if err != nil {
			t.Fatalf("%s: connect through the tailnet connector: %v", caller, err)
		}
		return cs
	}
	tools := func(cs *mcp.ClientSession) []string {
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		return names
	}
	call := func(cs *mcp.ClientSession, tool string) error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"account": "alice"}})
		return err
	}

	teller := connectAs("teller", "ledger")
	if got := tools(teller); !slices.Equal(got, []string{"balance", "history"}) {
		t.Fatalf("teller sees %v over the tailnet, want [balance history]", got)
	}
	if err := call(teller, "balance"); err != nil {
		t.Fatalf("teller's balance over the tailnet: %v", err)
	}
	if err := call(teller, "transfer"); err == nil || !strings.Contains(err.Error(), "not_granted") {
		t.Fatalf("teller's transfer over the tailnet: %v, want a not_granted denial", err)
	}
	// No grant links agent:stranger to the ledger: refused before MCP.
	// (The SDK reports the 403 without its body; the reason is audited.)
	if _, err := tryConnect("stranger", "ledger"); err == nil {
		t.Fatal("a caller without a grant initialised a session")
	}

	// The second gateway takes its rules from the tailnet's capability.
	capsCaller := connectAs("auditor", "ledger-caps")
	if got := tools(capsCaller); !slices.Equal(got, []string{"history"}) {
		t.Fatalf("capability caller sees %v, want [history]", got)
	}
	if err := call(capsCaller, "balance"); err == nil {
		t.Fatal("balance ran though the capability grants only history")
	}

	// A model API over the tailnet: the model list is filtered and a model
	// outside the grant is refused with the policy's reason.
	base := local("teller", "model:llm")
	status, body := httpDo(t, ctx, http.MethodGet, base+"/models", "")
	if status != http.StatusOK || !strings.Contains(body, `"gpt-4o-mini"`) || strings.Contains(body, `"gpt-4o"`) {
		t.Fatalf("GET /v1/models over the tailnet: %d %s, want only gpt-4o-mini", status, body)
	}
	status, body = httpDo(t, ctx, http.MethodPost, base+"/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	if status != http.StatusOK || !strings.Contains(body, modelgwtest.StreamChunks[0]) {
		t.Fatalf("granted completion over the tailnet: %d %s", status, body)
	}
	status, body = httpDo(t, ctx, http.MethodPost, base+"/chat/completions", `{"model":"gpt-4o","messages":[]}`)
	if status != http.StatusForbidden || !strings.Contains(body, `"reason":"not_granted"`) {
		t.Fatalf("model outside the grant over the tailnet: %d %s, want 403 not_granted", status, body)
	}

	// The decisions reach the coordinator's audit trail with the tailnet
	// identity as their source.
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		appended := co.AuditAppended()
		evs := auditEvents(t, ctx, d, "")
		if hasEvent(evs, "tailnet:teller."+tailnettest.MagicDNS, "transfer", audit.Deny) &&
			hasEvent(evs, "tailnet:teller."+tailnettest.MagicDNS, "balance", audit.Allow) &&
			hasEvent(evs, "tailnet:auditor."+tailnettest.MagicDNS, "balance", audit.Deny) &&
			slices.ContainsFunc(evs, func(e audit.Event) bool {
				return strings.HasPrefix(e.Src, "tailnet:teller.") && e.Model == "gpt-4o" && e.Decision == audit.Deny
			}) &&
			slices.ContainsFunc(evs, func(e audit.Event) bool {
				return strings.HasPrefix(e.Src, "tailnet:stranger.") && e.Kind == audit.KindConnection && e.Reason == "no_grant"
			}) {
			break
		}
		select {
		case <-appended:
		case <-deadline.C:
			t.Fatalf("the coordinator's trail lacks the tailnet decisions: %+v", evs)
		}
	}
}

// httpDo sends one request and returns the status and body.
func httpDo(t *testing.T, ctx context.Context, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// auditEvents reads the coordinator's trail with the query q.
func auditEvents(t *testing.T, ctx context.Context, d *demo.Mesh, q string) []audit.Event {
	t.Helper()
	body, err := d.Admin.Stream(ctx, controlapi.PathAudit+"?"+q)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	var evs []audit.Event
	sc := bufio.NewScanner(body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		e, err := audit.DecodeEvent(sc.Bytes())
		if err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

func hasEvent(evs []audit.Event, srcPrefix, tool string, decision audit.Decision) bool {
	return slices.ContainsFunc(evs, func(e audit.Event) bool {
		return strings.HasPrefix(e.Src, srcPrefix) && e.Tool == tool && e.Decision == decision
	})
}
