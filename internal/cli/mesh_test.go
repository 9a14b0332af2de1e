package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/examples"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/demo"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/store"
)

// startTestMesh runs the demo's mesh (coordinator, ledger behind a gateway,
// teller and auditor joined, example policy applied) without its story.
func startTestMesh(t *testing.T) (*demo.Mesh, context.Context) {
	t.Helper()
	return startTestMeshWith(t, nil)
}

// startTestMeshWith is startTestMesh whose coordinator's configuration
// configure may change (a clock, a long poll) before it starts.
func startTestMeshWith(t *testing.T, configure func(*coordinator.Config)) (*demo.Mesh, context.Context) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &demo.Mesh{Dir: t.TempDir(), Log: testLogger(t)}
	t.Cleanup(func() {
		cancel()
		d.Close()
	})
	cfg := coordinator.Config{DataDir: filepath.Join(d.Dir, "coordinator"), Listen: "127.0.0.1:0", Logger: d.Log}
	if configure != nil {
		configure(&cfg)
	}
	co, err := coordinator.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.Coordinator = co
	d.OnClose(func() { d.Coordinator.Close() })
	if d.Admin, err = d.Client(co.AdminDir()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ name, kind string }{{"ledger", "tool"}, {"teller", "agent"}, {"auditor", "agent"}} {
		if _, err := d.Join(ctx, n.name, n.kind); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.ApplyPolicy(ctx, string(examples.Policy)); err != nil {
		t.Fatal(err)
	}
	up, err := d.StartLedger()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.StartGateway(ctx, up); err != nil {
		t.Fatal(err)
	}
	return d, ctx
}

func testLogger(t *testing.T) *slog.Logger {
	return newLogger(Env{Stderr: io.Discard}, false, slog.LevelWarn)
}

// requestEvents counts tools/call decisions in the coordinator's trail.
func requestEvents(t *testing.T, ctx context.Context, d *demo.Mesh, decision audit.Decision) int {
	t.Helper()
	n := 0
	body, err := d.Admin.Stream(ctx, controlapi.PathAudit+"?kind=request&method=tools/call&decision="+string(decision))
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	b, _ := io.ReadAll(body)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" {
			n++
		}
	}
	return n
}

func TestMeshKeepsServingWhileCoordinatorIsDownAndDeliversEveryEventAfter(t *testing.T) {
	d, ctx := startTestMesh(t)
	teller, _, err := d.Agent(ctx, "teller", nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func(s *mcp.ClientSession, tool string) error {
		_, err := s.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"account": "alice"}})
		return err
	}
	if err := call(teller, "balance"); err != nil {
		t.Fatal(err)
	}
	// The auditor's connector has run once, so its cache holds the netmap
	// with the gateway's address.
	_, auditorEP, err := d.Agent(ctx, "auditor", nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := d.Coordinator.Addr().String()
	d.Coordinator.Close()

	// Coordinator down: the open session and a new one keep working on
	// cached certificates, netmap and policy; denials still deny.
	const calls = 20
	for range calls {
		if err := call(teller, "balance"); err != nil {
			t.Fatalf("call with the coordinator down: %v", err)
		}
	}
	auditor, err := mcp.NewClient(&mcp.Implementation{Name: "auditor", Version: "test"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: auditorEP.URL, MaxRetries: -1,
			HTTPClient: &http.Client{Transport: loopback.WithToken(nil, auditorEP.Token)}}, nil)
	if err != nil {
		t.Fatalf("new session with the coordinator down: %v", err)
	}
	defer auditor.Close()
	if err := call(auditor, "transfer"); err == nil || !strings.Contains(err.Error(), "not_granted") {
		t.Fatalf("denied call with the coordinator down: %v", err)
	}

	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(d.Dir, "coordinator"), Listen: addr, Logger: d.Log})
	if err != nil {
		t.Fatal(err)
	}
	d.Coordinator = co
	// Every decision made while it was away arrives, once.
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		appended := co.AuditAppended()
		allows, denies := requestEvents(t, ctx, d, audit.Allow), requestEvents(t, ctx, d, audit.Deny)
		if allows >= 1+calls && denies == 1 {
			// Nothing is delivered twice: ids are unique in the store, and
			// the allow count is exact once shipping settles.
			if allows != 1+calls {
				t.Fatalf("allow events = %d, want %d", allows, 1+calls)
			}
			break
		}
		select {
		case <-appended:
		case <-deadline.C:
			t.Fatalf("after the restart the trail has %d allow and %d deny request events, want %d and 1", allows, denies, 1+calls)
		}
	}
	var rep audit.Report
	if err := d.Admin.Call(ctx, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil || !rep.OK {
		t.Fatalf("verify after the outage: %+v %v", rep, err)
	}
}

func TestAuditCommandsQueryAndDetectTampering(t *testing.T) {
	d, ctx := startTestMesh(t)
	auditor, _, err := d.Agent(ctx, "auditor", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auditor.CallTool(ctx, &mcp.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "a", "to": "b", "amount": 1}}); err == nil {
		t.Fatal("auditor's transfer was allowed")
	}
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	// The denial reaches the coordinator when the gateway ships its spool.
	var out string
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for waiting := true; waiting; {
		appended := d.Coordinator.AuditAppended()
		_, out, _ = run(t, env, "audit", "--decision", "deny", "--kind", "request", "--json")
		if strings.Contains(out, `"tool":"transfer"`) {
			break
		}
		select {
		case <-appended:
		case <-deadline.C:
			waiting = false
		}
	}
	var ev audit.Event
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &ev); err != nil {
		t.Fatalf("audit --json: %q: %v", out, err)
	}
	if ev.Src != "spiffe://agentmesh.local/agent/auditor" || ev.Tool != "transfer" || ev.Decision != "deny" || ev.Reason != "not_granted" || ev.PolicyVersion == "" {
		t.Fatalf("deny event = %+v", ev)
	}
	if code, out, _ := run(t, env, "audit", "--src", "agent:auditor", "--limit", "5"); code != 0 || !strings.Contains(out, "transfer") {
		t.Fatalf("audit table: %d %q", code, out)
	}
	if code, out, _ := run(t, env, "audit", "verify"); code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("audit verify on an intact trail: %d %q", code, out)
	}
	// Edit the denial into an allow behind the coordinator's back.
	db, err := store.OpenSQLite(coordinator.DatabasePath(filepath.Join(d.Dir, "coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_events SET body = CAST(replace(CAST(body AS TEXT), '"deny"', '"allow"') AS BLOB), decision = 'allow' WHERE id = ?`, ev.ID); err != nil {
		t.Fatal(err)
	}
	code, out, _ := run(t, env, "audit", "verify")
	if code == 0 || !strings.Contains(out, ev.ID) {
		t.Fatalf("audit verify after tampering: exit %d, output %q should name event %s", code, out, ev.ID)
	}
}

func TestPolicyCommandsAgainstCoordinator(t *testing.T) {
	d, _ := startTestMesh(t) // applies examples/policy.hujson as version 1
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	dir := t.TempDir()

	// A policy whose own test fails is refused and changes nothing.
	failing := filepath.Join(dir, "failing.hujson")
	os.WriteFile(failing, []byte(`{
  "grants": [{"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance"]}],
  "tests": [{"src": "agent:teller", "dst": "tool:ledger", "allow": ["tools/call transfer"]}],
}`), 0o600)
	if code, _, errOut := run(t, env, "policy", "apply", failing); code == 0 || !strings.Contains(errOut, "transfer") {
		t.Fatalf("apply of a policy with a failing test: exit %d, %q", code, errOut)
	}
	// The coordinator checks too, whatever the client did.
	doc, _ := os.ReadFile(failing)
	err := d.Admin.Call(context.Background(), http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: string(doc)}, nil)
	var ae *controlclient.APIError
	if !errors.As(err, &ae) || ae.Code != "invalid_policy" {
		t.Fatalf("coordinator accepted a policy whose test fails: %v", err)
	}
	_, out, _ := run(t, env, "policy", "history", "--json")
	var hist []controlapi.PolicyVersion
	if json.Unmarshal([]byte(out), &hist) != nil || len(hist) != 1 {
		t.Fatalf("history after a refused apply: %q", out)
	}

	// A narrower policy, then a rollback to version 1.
	narrow := filepath.Join(dir, "narrow.hujson")
	os.WriteFile(narrow, []byte(`{"grants": [{"src": ["agent:teller"], "dst": ["tool:ledger"], "tools": ["balance"]}]}`), 0o600)
	if code, out, errOut := run(t, env, "policy", "apply", narrow); code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("apply: %d %q %q", code, out, errOut)
	}
	check := func() checkResult {
		t.Helper()
		code, out, errOut := run(t, env, "policy", "check", "--src", "agent:teller", "--dst", "tool:ledger", "--tool", "transfer", "--json")
		var res checkResult
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
			t.Fatalf("check: %d %q %q", code, out, errOut)
		}
		return res
	}
	if res := check(); res.Allow || res.Version != "2" || res.Reason != "not_granted" {
		t.Fatalf("check under version 2 = %+v", res)
	}
	if code, out, _ := run(t, env, "policy", "rollback", "1"); code != 0 || !strings.Contains(out, "version 3") {
		t.Fatalf("rollback: %d %q", code, out)
	}
	if res := check(); !res.Allow || res.Version != "3" {
		t.Fatalf("check after rollback = %+v", res)
	}
	if code, out, _ := run(t, env, "policy", "get"); code != 0 || out != string(examples.Policy) {
		t.Fatalf("policy get after rollback does not return version 1's document (exit %d)", code)
	}
	// The apply is audited with a diff.
	_, out, _ = run(t, env, "audit", "--kind", "admin", "--json", "--limit", "0")
	if !strings.Contains(out, `"action":"policy.apply"`) || !strings.Contains(out, `rollback to v1`) {
		t.Fatalf("policy applies missing from the audit trail: %s", out)
	}
}
