package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
)

// holdPolicy makes drop_table destructive and echo read-only by policy;
// agent:fraud's destructive calls need group:oncall's approval, its
// read-only ones do not.
const holdPolicy = `{
  "groups": {"group:oncall": ["admin:alice"]},
  "annotations": {"tool:payments-db": {"readonly": ["echo"], "destructive": ["drop_table"]}},
  "grants": [
    {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["destructive:*"], "approval": "group:oncall", "approval_timeout": "1s"},
    {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["readonly:*"]},
    {"src": ["agent:other"], "dst": ["tool:payments-db"], "tools": ["destructive:*"], "approval": "group:oncall", "approval_timeout": "1h"},
  ],
}`

// fakeApprovals is the coordinator's approval API in memory.
type fakeApprovals struct {
	mu         sync.Mutex
	n          int
	holds      map[string]*fakeHold
	registered chan controlapi.Approval
	withdrawn  chan controlapi.Approval
	refuse     bool
}

type fakeHold struct {
	a       controlapi.Approval
	decided chan struct{}
}

func newFakeApprovals() *fakeApprovals {
	return &fakeApprovals{holds: map[string]*fakeHold{}, registered: make(chan controlapi.Approval, 64), withdrawn: make(chan controlapi.Approval, 64)}
}

func (f *fakeApprovals) Call(ctx context.Context, method, path string, in, out any) error {
	p := controlapi.PathApprovals
	switch {
	case method == http.MethodPost && path == p:
		f.mu.Lock()
		if f.refuse {
			f.mu.Unlock()
			return errors.New("coordinator away")
		}
		f.n++
		h := &fakeHold{decided: make(chan struct{})}
		h.a = controlapi.Approval{ID: fmt.Sprintf("%016x", f.n), Status: controlapi.ApprovalPending, ApprovalRequest: in.(controlapi.ApprovalRequest)}
		f.holds[h.a.ID] = h
		a := h.a
		f.mu.Unlock()
		*out.(*controlapi.Approval) = a
		f.registered <- a
		return nil
	case method == http.MethodGet && strings.HasPrefix(path, p+"/"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, p+"/"), "?wait=1")
		f.mu.Lock()
		h := f.holds[id]
		f.mu.Unlock()
		select {
		case <-h.decided:
		case <-ctx.Done():
			return ctx.Err()
		}
		f.mu.Lock()
		*out.(*controlapi.Approval) = h.a
		f.mu.Unlock()
		return nil
	case method == http.MethodPost && strings.HasSuffix(path, "/withdraw"):
		id := strings.TrimSuffix(strings.TrimPrefix(path, p+"/"), "/withdraw")
		f.mu.Lock()
		h := f.holds[id]
		h.a.Status = controlapi.ApprovalWithdrawn
		if in.(controlapi.ApprovalDecision).Reason == "timeout" {
			h.a.Status = controlapi.ApprovalTimedOut
		}
		a := h.a
		f.mu.Unlock()
		f.withdrawn <- a
		return nil
	}
	return fmt.Errorf("unexpected %s %s", method, path)
}

func (f *fakeApprovals) decide(id, status, by, note string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.holds[id]
	h.a.Status, h.a.DecidedBy, h.a.Note = status, by, note
	close(h.decided)
}

func holdFixture(t *testing.T, fa *fakeApprovals, maxHolds, maxPerPeer int) *fixture {
	f := newFixture(t, fixtureOpts{config: func(c *Config) {
		if fa != nil {
			c.Approvals = fa
		}
		c.MaxHolds, c.MaxHoldsPerPeer = maxHolds, maxPerPeer
	}})
	f.gw.Update(f.state(holdPolicy))
	return f
}

type callResult struct {
	res *mcp.CallToolResult
	err error
}

func callAsync(ctx context.Context, cs *mcp.ClientSession, tool string) <-chan callResult {
	done := make(chan callResult, 1)
	go func() {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "x"}})
		done <- callResult{res, err}
	}()
	return done
}

func waitRegistered(t *testing.T, ctx context.Context, fa *fakeApprovals) controlapi.Approval {
	t.Helper()
	select {
	case a := <-fa.registered:
		return a
	case <-ctx.Done():
		t.Fatal("no hold registered")
	}
	return controlapi.Approval{}
}

func TestHeldCallCompletesOnApprove(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs := f.connect(ctx, f.fraud, "", nil)
	// A read-only tool is not held.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}}); err != nil {
		t.Fatalf("echo: %v", err)
	}
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	if a.Tool != "drop_table" || a.Group != "group:oncall" || a.Grant != 0 || !strings.Contains(a.Caller, "fraud") || a.EventID == "" {
		t.Errorf("registered %+v", a)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Fatalf("the upstream saw the held call %d times before approval", n)
	}
	fa.decide(a.ID, controlapi.ApprovalApproved, "spiffe://mesh/admin/alice", "")
	r := <-done
	if r.err != nil || r.res.IsError {
		t.Fatalf("approved call: %v %+v", r.err, r.res)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 1 {
		t.Errorf("upstream saw drop_table %d times, want 1", n)
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "drop_table" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Allow || !strings.Contains(ev.Detail, "approved by spiffe://mesh/admin/alice") || !strings.Contains(ev.Detail, a.ID) {
		t.Errorf("audit event %+v: want an allow naming the approver and the approval", ev)
	}
	if f.gw.holds.held() != 0 {
		t.Error("a hold outlived its call")
	}
}

func TestHeldCallRefusedOnDeny(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs := f.connect(ctx, f.fraud, "", nil)
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	fa.decide(a.ID, controlapi.ApprovalDenied, "spiffe://mesh/admin/alice", "freeze")
	r := <-done
	if d := denialOf(t, r.err); d.Reason != reason.ApprovalDenied || d.Code != CodeDenied {
		t.Fatalf("denied call: %+v", d)
	}
	ev, _ := f.rec.ByID(denialOf(t, r.err).EventID)
	if ev.Decision != audit.Deny || !strings.Contains(ev.Detail, "denied by spiffe://mesh/admin/alice") || !strings.Contains(ev.Detail, "freeze") {
		t.Errorf("audit event %+v", ev)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw a denied call")
	}
}

func TestHeldCallTimesOutToDenial(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs := f.connect(ctx, f.fraud, "", nil)
	r := <-callAsync(ctx, cs, "drop_table") // approval_timeout 1s, nobody decides
	if d := denialOf(t, r.err); d.Reason != reason.ApprovalTimeout {
		t.Fatalf("timed-out call: %+v", d)
	}
	if w := <-fa.withdrawn; w.Status != controlapi.ApprovalTimedOut {
		t.Errorf("withdrawn as %s, want timed_out", w.Status)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw a timed-out call")
	}
}

func TestCancelledCallWithdrawsHold(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs := f.connect(ctx, f.other, "", nil) // approval_timeout 1h
	cctx, cancel := context.WithCancel(ctx)
	done := callAsync(cctx, cs, "drop_table")
	waitRegistered(t, ctx, fa)
	cancel() // the SDK sends notifications/cancelled
	<-done
	w := <-fa.withdrawn
	if w.Status != controlapi.ApprovalWithdrawn {
		t.Errorf("withdrawn as %s", w.Status)
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "drop_table" && e.Decision == audit.Deny })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Reason != reason.ApprovalWithdrawn {
		t.Errorf("audit reason %s, want approval_withdrawn", ev.Reason)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw a withdrawn call")
	}
}

func TestHoldBounds(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 1) // one hold per caller
	cs := f.connect(ctx, f.other, "", nil)
	first := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	// The same caller, in another session: refused at once, HTTP 429.
	c := f.httpClient(f.other)
	sid := f.rawSession(ctx, c, "2025-11-25")
	status, _, body := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"drop_table","arguments":{}}}`,
		map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"})
	if d := rpcError(t, body); status != http.StatusTooManyRequests || d.Reason != reason.TooManyHolds || d.Code != CodeLimited {
		t.Fatalf("second hold of one caller: %d %+v", status, d)
	}
	fa.decide(a.ID, controlapi.ApprovalDenied, "admin", "")
	<-first

	// Without a way to reach the coordinator, a call needing approval is
	// denied, never forwarded.
	fa.mu.Lock()
	fa.refuse = true
	fa.mu.Unlock()
	r := <-callAsync(ctx, cs, "drop_table")
	if d := denialOf(t, r.err); d.Reason != reason.ApprovalUnavailable {
		t.Fatalf("unregistered hold: %+v", d)
	}
	g := holdFixture(t, nil, 0, 0)
	cs2 := g.connect(ctx, g.fraud, "", nil)
	r = <-callAsync(ctx, cs2, "drop_table")
	if d := denialOf(t, r.err); d.Reason != reason.ApprovalUnavailable {
		t.Fatalf("no approvals configured: %+v", d)
	}
}

// TestServerHintsNeverDecide: an upstream whose tools/list says a tool is
// read-only (readOnlyHint) does not make it so. A tool the policy calls
// destructive is held for approval however the server annotates it, and a
// tool the policy does not classify does not match a read-only grant.
func TestServerHintsNeverDecide(t *testing.T) {
	ctx := testContext(t)
	srv := mcp.NewServer(&mcp.Implementation{Name: "liar", Version: "1"}, nil)
	yes, no := true, false
	for _, name := range []string{"drop_table", "wipe"} {
		mcp.AddTool(srv, &mcp.Tool{Name: name, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: yes, DestructiveHint: &no}},
			func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, struct{}, error) {
				return nil, struct{}{}, nil
			})
	}
	fa := newFakeApprovals()
	f := newFixture(t, fixtureOpts{upstream: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil),
		config: func(c *Config) { c.Approvals = fa }})
	f.gw.Update(f.state(holdPolicy))
	cs := f.connect(ctx, f.fraud, "", nil)
	list, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range list.Tools {
		names = append(names, tl.Name)
	}
	// drop_table is visible (its grant holds it), wipe is not: the server
	// calls it read-only, the policy does not.
	if strings.Join(names, ",") != "drop_table" {
		t.Errorf("listed %v, want only drop_table", names)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "wipe", Arguments: map[string]any{}}); denialOf(t, err).Reason != reason.NotGranted {
		t.Errorf("wipe (unclassified, server says read-only): %v, want not_granted", err)
	}
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	if a.Tool != "drop_table" {
		t.Errorf("held %+v", a)
	}
	fa.decide(a.ID, controlapi.ApprovalDenied, "admin", "")
	if r := <-done; denialOf(t, r.err).Reason != reason.ApprovalDenied {
		t.Errorf("drop_table: %v", r.err)
	}
}

// TestApprovedCallDecidedAgain: a policy that stops allowing the call
// while it is held wins over the approval.
func TestApprovedCallDecidedAgain(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs := f.connect(ctx, f.fraud, "", nil)
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	f.gw.Update(f.state(`{"grants": [{"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["echo"]}]}`))
	fa.decide(a.ID, controlapi.ApprovalApproved, "spiffe://mesh/admin/alice", "")
	r := <-done
	if d := denialOf(t, r.err); d.Reason != reason.NotGranted {
		t.Fatalf("approved call under a policy that no longer grants it: %+v", d)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw a call the policy no longer allows")
	}
}

// TestApprovedCallCheckedAgainstThePinsInForce: a tool pinned, while its
// call was held, to a definition the server does not serve is refused as
// tool_changed when the approval arrives, and never reaches the upstream.
func TestApprovedCallCheckedAgainstThePinsInForce(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs := f.connect(ctx, f.other, "", nil)
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	pinned := strings.Replace(holdPolicy, `"grants": [`, `"tool_pins": {"tool:payments-db": {"tools": {"drop_table": "sha256:`+strings.Repeat("0", 64)+`"}}},
  "grants": [`, 1)
	f.gw.Update(f.state(pinned))
	fa.decide(a.ID, controlapi.ApprovalApproved, "spiffe://mesh/admin/alice", "")
	r := <-done
	if d := denialOf(t, r.err); d.Reason != reason.ToolChanged {
		t.Fatalf("approved call to a tool pinned meanwhile to another definition: %+v, want %s", d, reason.ToolChanged)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw a call whose tool no longer matches its pin")
	}
}

// TestHeldCallTellsProgressClients: a client that declared a progress
// token and accepts SSE hears that its call waits for approval, then gets
// the call's answer on the same stream.
func TestHeldCallTellsProgressClients(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	c := f.httpClient(f.fraud)
	sid := f.rawSession(ctx, c, "2025-11-25")
	for _, tc := range []struct {
		name, decision string
	}{{"approved", controlapi.ApprovalApproved}, {"denied", controlapi.ApprovalDenied}} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"drop_table","arguments":{},"_meta":{"progressToken":"p1"}}}`
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Session-Id", sid)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
				t.Fatalf("held call answered %d %s", resp.StatusCode, ct)
			}
			a := waitRegistered(t, ctx, fa)
			rd := sse.NewReader(resp.Body, 1<<20)
			next := func() map[string]any {
				t.Helper()
				for {
					ev, err := rd.Next()
					if err != nil {
						t.Fatalf("stream ended: %v", err)
					}
					if ev.HasData {
						var msg map[string]any
						if err := json.Unmarshal(ev.Data, &msg); err != nil {
							t.Fatalf("event %q: %v", ev.Data, err)
						}
						return msg
					}
				}
			}
			p := next()
			params, _ := p["params"].(map[string]any)
			if p["method"] != "notifications/progress" || params["progressToken"] != "p1" || !strings.Contains(fmt.Sprint(params["message"]), "waiting for approval by group:oncall") {
				t.Fatalf("first event %v, want a progress notification saying the call waits", p)
			}
			fa.decide(a.ID, tc.decision, "spiffe://mesh/admin/alice", "")
			var final map[string]any
			for final == nil {
				if msg := next(); msg["id"] != nil {
					final = msg
				}
			}
			switch tc.decision {
			case controlapi.ApprovalApproved:
				if final["result"] == nil {
					t.Errorf("approved call answered %v", final)
				}
			default:
				e, _ := final["error"].(map[string]any)
				data, _ := e["data"].(map[string]any)
				if data["reason"] != string(reason.ApprovalDenied) {
					t.Errorf("denied call answered %v", final)
				}
			}
		})
	}
}

// TestNotificationsCancelledWithdrawsHold: notifications/cancelled naming
// a held request, on the caller's session, ends its hold.
func TestNotificationsCancelledWithdrawsHold(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	c := f.httpClient(f.other) // approval_timeout 1h
	sid := f.rawSession(ctx, c, "2025-11-25")
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
	type answer struct {
		status int
		body   []byte
	}
	done := make(chan answer, 1)
	go func() {
		status, _, body := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":"call-1","method":"tools/call","params":{"name":"drop_table","arguments":{}}}`, hdr)
		done <- answer{status, body}
	}()
	waitRegistered(t, ctx, fa)
	// Another caller's cancellation of the same id does nothing.
	oc := f.httpClient(f.fraud)
	osid := f.rawSession(ctx, oc, "2025-11-25")
	f.rawPost(ctx, oc, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"call-1"}}`,
		map[string]string{"Mcp-Session-Id": osid, "Mcp-Protocol-Version": "2025-11-25"})
	if n := f.gw.holds.held(); n != 1 {
		t.Fatalf("%d calls held after another caller's cancellation, want 1", n)
	}
	if status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"call-1"}}`, hdr); status != http.StatusAccepted {
		t.Fatalf("notifications/cancelled: %d %s", status, b)
	}
	a := <-done
	if d := rpcError(t, a.body); d.Reason != reason.ApprovalWithdrawn {
		t.Fatalf("cancelled call answered %d %+v", a.status, d)
	}
	if w := <-fa.withdrawn; w.Status != controlapi.ApprovalWithdrawn {
		t.Errorf("withdrawn as %s", w.Status)
	}
}
