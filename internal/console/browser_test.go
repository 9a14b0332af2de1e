package console_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/examples"
	"github.com/agentmesh/agentmesh/internal/console"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/demo"
	"github.com/agentmesh/agentmesh/internal/engine"
)

// chromium finds a Chromium (Debian's chromium) to drive. Without one the
// browser tests skip, unless AGENTMESH_REQUIRE_CHROMIUM=1 says that this
// run must have them (CI), and then they fail.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("AGENTMESH_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("AGENTMESH_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); set AGENTMESH_REQUIRE_CHROMIUM=1 to make this a failure")
	return ""
}

// screenshots is where the run writes a PNG of each page:
// $AGENTMESH_SCREENSHOTS when set, else a temporary directory.
func screenshots(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("AGENTMESH_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// browserMesh is the demo's mesh (coordinator, the ledger behind a
// gateway, agents teller and auditor, the example policy), a console on it,
// and a headless Chromium.
type browserMesh struct {
	mesh    *demo.Mesh
	console *console.Console
	auditor *mcp.ClientSession
	browser context.Context
	shots   string
	n       int
}

func startBrowserMesh(t *testing.T) *browserMesh {
	t.Helper()
	exe := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	d := &demo.Mesh{Dir: t.TempDir()}
	t.Cleanup(func() {
		cancel()
		d.Close()
	})
	if err := d.StartCoordinator(ctx, engine.CoordinatorConfig{}); err != nil {
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
	auditor, _, err := d.Agent(ctx, "auditor", nil)
	if err != nil {
		t.Fatal(err)
	}
	// One allowed call, so the trail and the services page have a tool
	// call to show.
	if _, err := auditor.CallTool(ctx, &mcp.CallToolParams{Name: "balance", Arguments: map[string]any{"account": "alice"}}); err != nil {
		t.Fatal(err)
	}

	admin, err := d.Client(d.Coordinator.AdminDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := console.Listen(console.Config{Admin: admin, Listen: "127.0.0.1:0", FollowEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() { served <- c.Serve(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("console: %v", err)
		}
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox to root
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		bcancel()
		acancel()
	})
	// Start the browser on bctx itself: the first run's context owns
	// the browser, and the later runs' shorter ones must not end it.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return &browserMesh{mesh: d, console: c, auditor: auditor, browser: bctx, shots: screenshots(t)}
}

// do runs browser actions, failing the test with what was being done.
func (b *browserMesh) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.browser, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.shot(t, "failed")
		loc, _ := chromedp.Run(b.browser, chromedp.Location())
		t.Fatalf("%s: %v (page %s; its screenshot is in %s)", what, err, loc, b.shots)
	}
}

func (b *browserMesh) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(b.browser, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// waitFor polls a JavaScript predicate in the page.
func (b *browserMesh) waitFor(t *testing.T, what, predicate string) {
	t.Helper()
	if _, err := chromedp.Run(b.browser, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// shot writes a PNG of the whole page as NN-name.png.
func (b *browserMesh) shot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(b.browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	b.n++
	if err := os.WriteFile(filepath.Join(b.shots, fmt.Sprintf("%02d-%s.png", b.n, name)), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The policy change the test makes through the form: the auditor may no
// longer read the ledger's history. Without the matching change of the
// document's own tests, the document is refused.
const (
	auditorTools    = `"tools": ["balance", "history"],` + "\n" + `      "prompts": ["monthly-report"],`
	auditorToolsNew = `"tools": ["balance"],` + "\n" + `      "prompts": ["monthly-report"],`
	auditorTest     = `"allow": ["tools/call balance", "tools/call history", "prompts/get monthly-report"],` + "\n" + `      "deny": ["tools/call transfer"],`
	auditorTestNew  = `"allow": ["tools/call balance", "prompts/get monthly-report"],` + "\n" + `      "deny": ["tools/call transfer", "tools/call history"],`
)

func TestConsoleInChromium(t *testing.T) {
	b := startBrowserMesh(t)
	ctx := b.browser

	// Log in with the one-time URL: it lands on the overview.
	b.do(t, "log in", chromedp.Navigate(b.console.LoginURL()), chromedp.WaitVisible(chromedp.CSS(".cards")))
	if h := b.text(t, "h1"); h != "Overview" {
		t.Fatalf("after login the page is %q, want the overview", h)
	}
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); strings.Contains(loc, "token=") {
		t.Errorf("the login token stayed in the address bar: %s", loc)
	}
	b.shot(t, "overview")

	// Policy: a change whose tests fail is refused, then the fixed one
	// is checked (diff shown) and applied.
	doc := string(examples.Policy)
	if !strings.Contains(doc, auditorTools) || !strings.Contains(doc, auditorTest) {
		t.Fatal("examples/policy.hujson changed: update the edit this test makes")
	}
	broken := strings.Replace(doc, auditorTools, auditorToolsNew, 1)
	b.do(t, "edit the policy", chromedp.Navigate(b.console.URL()+"/policy"), chromedp.SetValue(chromedp.ID("document"), broken))
	// Typing runs the live check; SetValue types nothing, so say so.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("document").dispatchEvent(new Event("input"))`)); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the live check to refuse the edit", `(() => { const e = document.getElementById("live-check");
		return !e.hidden && e.classList.contains("bad") && e.textContent.includes("tools/call history"); })()`)
	b.shot(t, "policy-live-check")
	b.do(t, "submit a policy whose tests fail",
		chromedp.Click(chromedp.CSS(`button[value="apply"]`)),
		chromedp.WaitVisible(chromedp.CSS("#check.bad")))
	if got := b.text(t, "#check"); !strings.Contains(got, "tools/call history") {
		t.Errorf("the refusal does not name the failing test:\n%s", got)
	}
	fixed := strings.Replace(broken, auditorTest, auditorTestNew, 1)
	b.do(t, "check the fixed policy", chromedp.SetValue(chromedp.ID("document"), fixed),
		chromedp.Click(chromedp.CSS(`button[value="check"]`)),
		chromedp.WaitVisible(chromedp.CSS("#check.good")))
	if got := b.text(t, "pre.diff"); !strings.Contains(got, `-`) || !strings.Contains(got, `"tools": ["balance"],`) {
		t.Errorf("the diff does not show the change:\n%s", got)
	}
	b.shot(t, "policy-check")
	b.do(t, "apply the policy", chromedp.Click(chromedp.CSS(`button[value="apply"]`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(t, ".flash"); got != "applied policy version 2" {
		t.Fatalf("after apply: %q", got)
	}
	var pv controlapi.PolicyVersion
	if err := b.mesh.Admin.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &pv); err != nil || pv.Version != 2 || pv.Document != fixed {
		t.Fatalf("active policy: version %d (err %v), document as submitted: %v", pv.Version, err, pv.Document == fixed)
	}
	b.shot(t, "policy")

	// Live audit: follow denials, then make a denied call; it appears
	// without a reload.
	b.do(t, "open the live audit", chromedp.Navigate(b.console.URL()+"/audit?decision=deny"))
	b.waitFor(t, "the follow to start", `document.getElementById("follow-state").className === "on"`)
	// The gateway has the new policy within a second or so; until then
	// the call is still allowed. Poll, with a deadline.
	for deadline := time.Now().Add(time.Minute); ; {
		_, err := b.auditor.CallTool(ctx, &mcp.CallToolParams{Name: "history", Arguments: map[string]any{}})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the auditor may still call history a minute after the policy change")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.waitFor(t, "the denial to arrive", `Array.from(document.querySelectorAll("#events tbody tr.fresh.deny")).some(r => r.textContent.includes("tools/call history") && r.textContent.includes("agent:auditor"))`)
	b.shot(t, "audit")

	// Open it: why was it denied?
	b.do(t, "open the denial", chromedp.Click(chromedp.CSS("#events tbody tr.fresh.deny a")), chromedp.WaitVisible(chromedp.ID("why")))
	if why := b.text(t, "#why"); !strings.Contains(why, "not_granted") || !strings.Contains(why, "policy version 2") {
		t.Errorf("why the call was denied: %q, want not_granted under policy version 2", why)
	}
	b.shot(t, "event")

	b.do(t, "open the denials", chromedp.Navigate(b.console.URL()+"/denials"), chromedp.WaitVisible(chromedp.CSS("table")))
	if got := b.text(t, "main table"); !strings.Contains(got, "agent:auditor") || !strings.Contains(got, "not_granted") {
		t.Errorf("denials page lacks the auditor's not_granted:\n%s", got)
	}
	b.shot(t, "denials")

	b.do(t, "open the services", chromedp.Navigate(b.console.URL()+"/services"), chromedp.WaitVisible(chromedp.CSS("table.matrix")))
	b.shot(t, "services")

	// Revoke teller through the nodes page, with its confirmation.
	b.do(t, "open the nodes", chromedp.Navigate(b.console.URL()+"/nodes"), chromedp.WaitVisible(chromedp.CSS(`tr[data-node="teller"]`)))
	b.shot(t, "nodes")
	b.do(t, "tag auditor",
		chromedp.SetValue(chromedp.CSS(`tr[data-node="auditor"] input[name="tags"]`), "tag:audit, tag:prod"),
		chromedp.Click(chromedp.CSS(`tr[data-node="auditor"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(t, ".flash"); got != "auditor now has tags [tag:audit, tag:prod]" {
		t.Errorf("after tagging: %q", got)
	}
	b.do(t, "ask to revoke teller",
		chromedp.Click(chromedp.CSS(`tr[data-node="teller"] a.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="confirm"]`)))
	b.shot(t, "revoke")
	b.do(t, "revoke teller",
		chromedp.SendKeys(chromedp.CSS(`input[name="confirm"]`), "teller"),
		chromedp.Click(chromedp.CSS(`.confirm button.danger`)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(t, ".flash"); !strings.HasPrefix(got, "revoked teller") {
		t.Fatalf("after revoke: %q", got)
	}
	if got := b.text(t, `tr[data-node="teller"] .state`); got != "revoked" {
		t.Errorf("teller's state on the nodes page: %q, want revoked", got)
	}
	b.shot(t, "revoked")
	var nodes []controlapi.NodeInfo
	if err := b.mesh.Admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == "teller" && n.Status != "revoked" {
			t.Errorf("the coordinator has teller %s, want revoked", n.Status)
		}
	}
	// History: view version 1, its diff against the active one, and
	// roll back to it.
	b.do(t, "view policy version 1", chromedp.Navigate(b.console.URL()+"/policy?version=1"), chromedp.WaitVisible(chromedp.CSS("pre.diff")))
	b.shot(t, "policy-history")
	b.do(t, "roll back to version 1", chromedp.Click(chromedp.CSS(`form[action="/policy/rollback"] button`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(t, ".flash"); got != "rolled back: version 3 is version 1's policy" {
		t.Errorf("after rollback: %q", got)
	}

	b.do(t, "verify the audit trail", chromedp.Navigate(b.console.URL()+"/"),
		chromedp.Click(chromedp.CSS(`form[action="/audit/verify"] button`)), chromedp.WaitVisible(chromedp.CSS("main pre")))
	if got := b.text(t, "main p"); got != "The audit trail checks out." {
		t.Errorf("audit verification: %q", got)
	}
	b.shot(t, "verify")

	b.do(t, "open the overview", chromedp.Navigate(b.console.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(".cards")))
	if got := b.text(t, "#denials-hour"); got == "0" {
		t.Errorf("the overview counts no denial in the last hour")
	}
	b.shot(t, "overview-after")
	if err := ctx.Err(); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the browser test ran out of time")
	}
	t.Logf("screenshots in %s", b.shots)
}
