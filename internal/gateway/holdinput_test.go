package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// elicitingClient connects a 2026-07-28 SDK client that answers every
// elicitation with action and reports each request's message on asked.
func (f *fixture) elicitingClient(ctx context.Context, action string) (*mcp.ClientSession, <-chan string) {
	asked := make(chan string, 4)
	cs := f.connect(ctx, f.fraud, "2026-07-28", &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			asked <- req.Params.Message
			return &mcp.ElicitResult{Action: action}, nil
		},
	})
	return cs, asked
}

func TestInputRequiredHoldCompletesOnApprove(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	f.gw.Update(f.state(strings.Replace(holdPolicy, `"approval_timeout": "1s"`, `"approval_timeout": "1h"`, 1)))
	cs, asked := f.elicitingClient(ctx, "accept")
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	select {
	case msg := <-asked:
		if want := "This call to drop_table waits for approval by group:oncall (approval " + a.ID + ")"; !strings.Contains(msg, want) {
			t.Errorf("the client was asked %q, want it to contain %q", msg, want)
		}
	case <-ctx.Done():
		t.Fatal("the client was never asked")
	}
	held, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "drop_table" && e.Outcome == audit.OutcomeHeld })
	if err != nil {
		t.Fatal(err)
	}
	if held.Decision != audit.Allow || !strings.Contains(held.Detail, a.ID) || held.ID != a.EventID {
		t.Errorf("held event %+v: want an allow naming approval %s, the event the approval names", held, a.ID)
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
	for _, b := range f.up.Bodies() {
		if bytes.Contains(b, []byte("drop_table")) && (bytes.Contains(b, []byte("requestState")) || bytes.Contains(b, []byte("inputResponses"))) {
			t.Errorf("the upstream got the gateway's retry params: %s", b)
		}
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "drop_table" && e.Outcome == audit.OutcomeOK })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Allow || !strings.Contains(ev.Detail, "approved by spiffe://mesh/admin/alice") || !strings.Contains(ev.Detail, a.ID) {
		t.Errorf("retry's event %+v: want an allow naming the approver and the approval", ev)
	}
	if f.gw.holds.held() != 0 || len(f.gw.parked.all()) != 0 {
		t.Error("a hold outlived its call")
	}
}

func TestInputRequiredDeclineWithdrawsHold(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	cs, _ := f.elicitingClient(ctx, "decline")
	done := callAsync(ctx, cs, "drop_table")
	a := waitRegistered(t, ctx, fa)
	r := <-done
	if r.err == nil {
		t.Fatalf("declined call answered %+v", r.res)
	}
	if d := denialOf(t, r.err); d.Reason != reason.ApprovalWithdrawn {
		t.Errorf("declined call: %+v, want approval_withdrawn", d)
	}
	select {
	case w := <-fa.withdrawn:
		if w.ID != a.ID || w.Status != controlapi.ApprovalWithdrawn {
			t.Errorf("withdrew %+v, want %s withdrawn", w, a.ID)
		}
	case <-ctx.Done():
		t.Fatal("the hold was never withdrawn")
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "drop_table" && e.Decision == audit.Deny })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Reason != reason.ApprovalWithdrawn || !strings.Contains(ev.Detail, "declined") {
		t.Errorf("event %+v: want approval_withdrawn saying the caller declined", ev)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw a withdrawn call %d times", n)
	}
	if f.gw.holds.held() != 0 || len(f.gw.parked.all()) != 0 {
		t.Error("a hold outlived its call")
	}
}

// rawHeld sends a 2026-07-28 tools/call of drop_table that declares
// elicitation, with extra params, and returns the JSON-RPC answer.
func (f *fixture) rawHeld(ctx context.Context, c *http.Client, id int, params string) map[string]any {
	f.t.Helper()
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`
	hdr := map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "drop_table"}
	status, _, b := f.rawPost(ctx, c, call(id, "tools/call", `{"name":"drop_table",`+params+meta+`}`), hdr)
	if status != http.StatusOK && status != http.StatusTooManyRequests {
		f.t.Fatalf("call %d: %d %s", id, status, b)
	}
	if i := bytes.Index(b, []byte("data: ")); bytes.HasPrefix(b, []byte("event:")) && i >= 0 {
		b = b[i+len("data: "):] // an SSE answer: its one message
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		f.t.Fatalf("call %d: %v: %s", id, err, b)
	}
	return m
}

func reasonOf(m map[string]any) reason.Code {
	e, _ := m["error"].(map[string]any)
	d, _ := e["data"].(map[string]any)
	r, _ := d["reason"].(string)
	return reason.Code(r)
}

func TestInputRequiredRetryIsBoundToCallerToolAndArguments(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	f.gw.Update(f.state(strings.Replace(holdPolicy, `"approval_timeout": "1s"`, `"approval_timeout": "1h"`, 1)))
	fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)

	first := f.rawHeld(ctx, fraud, 1, `"arguments":{"text":"x"},`)
	a := waitRegistered(t, ctx, fa)
	res, _ := first["result"].(map[string]any)
	key := "agentmesh-hold-" + a.ID
	reqs, _ := res["inputRequests"].(map[string]any)
	ask, _ := reqs[key].(map[string]any)
	if res["resultType"] != "input_required" || res["requestState"] != key || ask["method"] != "elicitation/create" {
		t.Fatalf("first answer %v: want input_required with elicitation %s", first, key)
	}
	retry := `"requestState":"` + key + `","inputResponses":{"` + key + `":{"action":"accept"}},`
	// Another identity, another tool's arguments, a made-up state: refused,
	// and the hold stays parked for its caller.
	if m := f.rawHeld(ctx, other, 2, `"arguments":{"text":"x"},`+retry); reasonOf(m) != reason.ApprovalUnknown {
		t.Errorf("another identity's retry: %v, want approval_unknown", m)
	}
	if m := f.rawHeld(ctx, fraud, 3, `"arguments":{"text":"y"},`+retry); reasonOf(m) != reason.ApprovalUnknown {
		t.Errorf("a retry with other arguments: %v, want approval_unknown", m)
	}
	if m := f.rawHeld(ctx, fraud, 4, `"arguments":{"text":"x","n":1},"requestState":"agentmesh-hold-0123",`); reasonOf(m) != reason.ApprovalUnknown {
		t.Errorf("a made-up state: %v, want approval_unknown", m)
	}
	if len(f.gw.parked.all()) != 1 || f.gw.holds.held() != 1 {
		t.Fatalf("parked %d, held %d after refused retries; want the one hold still parked", len(f.gw.parked.all()), f.gw.holds.held())
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Fatalf("the upstream saw drop_table %d times", n)
	}
	// The caller's retry, with its arguments re-encoded, takes it over and
	// waits; once approved the call reaches the upstream as first held.
	fa.decide(a.ID, controlapi.ApprovalApproved, "spiffe://mesh/admin/alice", "")
	m := f.rawHeld(ctx, fraud, 5, `"arguments":{ "text" : "\u0078" },`+retry)
	if m["error"] != nil {
		t.Fatalf("the caller's retry: %v", m)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 1 {
		t.Errorf("upstream saw drop_table %d times, want 1", n)
	}
	// One retry per hold.
	if m := f.rawHeld(ctx, fraud, 6, `"arguments":{"text":"x"},`+retry); reasonOf(m) != reason.ApprovalUnknown {
		t.Errorf("a second retry: %v, want approval_unknown", m)
	}
	if f.gw.holds.held() != 0 || len(f.gw.parked.all()) != 0 {
		t.Error("a hold outlived its call")
	}
}

func TestParkedHoldsAreBoundedAndExpire(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 1)
	f.gw.parkGrace = 0
	fraud := f.httpClient(f.fraud)
	f.rawHeld(ctx, fraud, 1, `"arguments":{"text":"x"},`)
	a := waitRegistered(t, ctx, fa)
	// The parked hold keeps its caller's one slot.
	if m := f.rawHeld(ctx, fraud, 2, `"arguments":{"text":"x"},`); reasonOf(m) != reason.TooManyHolds {
		t.Errorf("a second held call: %v, want too_many_holds", m)
	}
	// Nobody calls again: after the grant's approval_timeout (1s) the hold
	// is withdrawn and audited, and its slot is free.
	select {
	case w := <-fa.withdrawn:
		if w.ID != a.ID || w.Status != controlapi.ApprovalTimedOut {
			t.Errorf("withdrew %+v, want %s timed out", w, a.ID)
		}
	case <-ctx.Done():
		t.Fatal("the parked hold never expired")
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Reason == reason.ApprovalTimeout })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Tool != "drop_table" || ev.Decision != audit.Deny || !strings.Contains(ev.Src, "fraud") || !strings.Contains(ev.Detail, "did not call again") {
		t.Errorf("expiry event %+v", ev)
	}
	if f.gw.holds.held() != 0 || len(f.gw.parked.all()) != 0 {
		t.Error("an expired hold kept its slot")
	}
}

func TestParkedHoldEndsWhenItsCallerLosesAccess(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	f.rawHeld(ctx, f.httpClient(f.fraud), 1, `"arguments":{"text":"x"},`)
	a := waitRegistered(t, ctx, fa)
	f.gw.Update(f.state(holdPolicy, func(p map[identity.Name]admission.Peer) {
		for k, v := range p {
			if strings.Contains(string(k), "fraud") {
				v.Incarnation = "inc2" // re-joined: the old certificate is out
				p[k] = v
			}
		}
	}))
	select {
	case w := <-fa.withdrawn:
		if w.ID != a.ID || w.Status != controlapi.ApprovalWithdrawn {
			t.Errorf("withdrew %+v, want %s withdrawn", w, a.ID)
		}
	case <-ctx.Done():
		t.Fatal("the parked hold outlived its caller's access")
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Reason == reason.ApprovalWithdrawn && strings.Contains(e.Detail, a.ID)
	}); err != nil {
		t.Fatal(err)
	}
	if f.gw.holds.held() != 0 {
		t.Error("the ended hold kept its slot")
	}
}
