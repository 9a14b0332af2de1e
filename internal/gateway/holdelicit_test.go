package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
)

// elicitSession initializes a raw session whose client declares caps.
func (f *fixture) elicitSession(ctx context.Context, c *http.Client, caps string) map[string]string {
	f.t.Helper()
	status, h, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":`+caps+`,"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	if status != http.StatusOK || h.Get("Mcp-Session-Id") == "" {
		f.t.Fatalf("initialize: %d %s", status, b)
	}
	hdr := map[string]string{"Mcp-Session-Id": h.Get("Mcp-Session-Id"), "Mcp-Protocol-Version": "2025-11-25"}
	if status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, hdr); status != http.StatusAccepted {
		f.t.Fatalf("initialized: %d %s", status, b)
	}
	return hdr
}

// heldCall is a held tools/call's answer as it streams.
type heldCall struct {
	t    testing.TB
	resp *http.Response
	rd   *sse.Reader
}

// startHeld posts a drop_table call (without a progress token) on the
// session of hdr and returns its answer once the response head is in.
func (f *fixture) startHeld(ctx context.Context, c *http.Client, hdr map[string]string) *heldCall {
	f.t.Helper()
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"drop_table","arguments":{}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { resp.Body.Close() })
	return &heldCall{t: f.t, resp: resp, rd: sse.NewReader(resp.Body, 1<<20)}
}

// next returns the next message on the held call's stream.
func (h *heldCall) next() map[string]any {
	h.t.Helper()
	for {
		ev, err := h.rd.Next()
		if err != nil {
			h.t.Fatalf("stream ended: %v", err)
		}
		if ev.HasData {
			var msg map[string]any
			if err := json.Unmarshal(ev.Data, &msg); err != nil {
				h.t.Fatalf("event %q: %v", ev.Data, err)
			}
			return msg
		}
	}
}

// answer posts the client's response to elicitation id with action.
func (f *fixture) answer(ctx context.Context, c *http.Client, hdr map[string]string, id, action string) (int, []byte) {
	f.t.Helper()
	status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":"`+id+`","result":{"action":"`+action+`"}}`, hdr)
	return status, b
}

// expectElicitation reads the elicitation/create that opens a held call's
// stream and returns its id.
func expectElicitation(t *testing.T, h *heldCall, a controlapi.Approval) string {
	t.Helper()
	if ct := h.resp.Header.Get("Content-Type"); h.resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("held call answered %d %s, want an SSE stream", h.resp.StatusCode, ct)
	}
	msg := h.next()
	params, _ := msg["params"].(map[string]any)
	schema, _ := params["requestedSchema"].(map[string]any)
	text := fmt.Sprint(params["message"])
	if msg["method"] != "elicitation/create" || msg["id"] != elicitIDPrefix+a.ID || schema["type"] != "object" ||
		!strings.Contains(text, "drop_table") || !strings.Contains(text, "group:oncall") || !strings.Contains(text, a.ID) {
		t.Fatalf("first event %v, want the hold's elicitation", msg)
	}
	return elicitIDPrefix + a.ID
}

// TestDeclinedElicitationWithdrawsHold: a client that declared elicitation
// is asked on the held call's stream; answers from another session or
// identity are refused, its own decline withdraws the hold and the
// upstream never sees the call.
func TestDeclinedElicitationWithdrawsHold(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	c := f.httpClient(f.other) // approval_timeout 1h
	hdr := f.elicitSession(ctx, c, `{"elicitation":{}}`)
	h := f.startHeld(ctx, c, hdr)
	a := waitRegistered(t, ctx, fa)
	id := expectElicitation(t, h, a)

	// Another session of the same identity, and another identity: refused,
	// and the hold goes on.
	sameID := f.elicitSession(ctx, c, `{"elicitation":{}}`)
	oc := f.httpClient(f.fraud)
	otherID := f.elicitSession(ctx, oc, `{"elicitation":{}}`)
	for _, forged := range []struct {
		c   *http.Client
		hdr map[string]string
	}{{c, sameID}, {oc, otherID}, {oc, nil}} {
		status, b := f.answer(ctx, forged.c, forged.hdr, id, "decline")
		if d := rpcError(t, b); status != http.StatusForbidden || d.Reason != reason.ApprovalUnknown {
			t.Fatalf("forged decline answered %d %+v", status, d)
		}
	}
	if n := f.gw.holds.held(); n != 1 {
		t.Fatalf("%d calls held after forged answers, want 1", n)
	}

	if status, b := f.answer(ctx, c, hdr, id, "decline"); status != http.StatusAccepted {
		t.Fatalf("decline: %d %s", status, b)
	}
	final := h.next()
	e, _ := final["error"].(map[string]any)
	data, _ := e["data"].(map[string]any)
	if final["id"] != float64(7) || data["reason"] != string(reason.ApprovalWithdrawn) {
		t.Fatalf("declined call answered %v", final)
	}
	if w := <-fa.withdrawn; w.Status != controlapi.ApprovalWithdrawn {
		t.Errorf("withdrawn as %s", w.Status)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 0 {
		t.Errorf("the upstream saw the declined call %d times", n)
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Tool == "drop_table" && e.Reason == reason.ApprovalWithdrawn && strings.Contains(e.Detail, "declined its elicitation")
	}); err != nil {
		t.Errorf("no withdrawal audited: %v", err)
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Method == "response" && strings.Contains(e.Detail, "answered: decline")
	}); err != nil {
		t.Errorf("the answer is not audited: %v", err)
	}
	// A second answer finds nothing to answer.
	if status, b := f.answer(ctx, c, hdr, id, "decline"); status != http.StatusForbidden {
		t.Errorf("second decline: %d %s", status, b)
	}
	if n := f.gw.elicits.pending(); n != 0 {
		t.Errorf("%d elicitations outlived their hold", n)
	}
}

// TestAcceptedElicitationKeepsHold: accepting leaves the call held, and
// the approval then completes it.
func TestAcceptedElicitationKeepsHold(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	c := f.httpClient(f.other)
	hdr := f.elicitSession(ctx, c, `{"elicitation":{"form":{}}}`)
	h := f.startHeld(ctx, c, hdr)
	a := waitRegistered(t, ctx, fa)
	id := expectElicitation(t, h, a)
	if status, b := f.answer(ctx, c, hdr, id, "accept"); status != http.StatusAccepted {
		t.Fatalf("accept: %d %s", status, b)
	}
	if n := f.gw.holds.held(); n != 1 {
		t.Fatalf("%d calls held after accept, want 1", n)
	}
	fa.decide(a.ID, controlapi.ApprovalApproved, "spiffe://mesh/admin/alice", "")
	final := h.next()
	if final["id"] != float64(7) || final["result"] == nil {
		t.Fatalf("approved call answered %v", final)
	}
	if n := f.up.Calls.Count("tool:drop_table"); n != 1 {
		t.Errorf("upstream saw drop_table %d times, want 1", n)
	}
}

// TestElicitationCancelledWhenHoldEnds: a hold that ends before the client
// answers cancels the elicitation on the stream, before the call's answer,
// and a late answer is refused.
func TestElicitationCancelledWhenHoldEnds(t *testing.T) {
	ctx := testContext(t)
	fa := newFakeApprovals()
	f := holdFixture(t, fa, 0, 0)
	c := f.httpClient(f.other)
	hdr := f.elicitSession(ctx, c, `{"elicitation":{}}`)
	h := f.startHeld(ctx, c, hdr)
	a := waitRegistered(t, ctx, fa)
	id := expectElicitation(t, h, a)
	fa.decide(a.ID, controlapi.ApprovalDenied, "spiffe://mesh/admin/alice", "")
	cancelled := h.next()
	params, _ := cancelled["params"].(map[string]any)
	if cancelled["method"] != "notifications/cancelled" || params["requestId"] != id {
		t.Fatalf("after the decision %v, want the elicitation cancelled", cancelled)
	}
	final := h.next()
	e, _ := final["error"].(map[string]any)
	data, _ := e["data"].(map[string]any)
	if data["reason"] != string(reason.ApprovalDenied) {
		t.Fatalf("denied call answered %v", final)
	}
	if status, b := f.answer(ctx, c, hdr, id, "decline"); status != http.StatusForbidden || rpcError(t, b).Reason != reason.ApprovalUnknown {
		t.Errorf("late decline: %d %s", status, b)
	}
}

// TestNoElicitationWithoutCapability: clients that did not declare form
// elicitation are not asked, and without a progress token get the plain
// answer.
func TestNoElicitationWithoutCapability(t *testing.T) {
	for _, caps := range []string{`{}`, `{"elicitation":{"url":{}}}`} {
		t.Run(caps, func(t *testing.T) {
			ctx := testContext(t)
			fa := newFakeApprovals()
			f := holdFixture(t, fa, 0, 0)
			c := f.httpClient(f.other)
			hdr := f.elicitSession(ctx, c, caps)
			done := make(chan *heldCall, 1)
			go func() { done <- f.startHeld(ctx, c, hdr) }()
			a := waitRegistered(t, ctx, fa)
			if n := f.gw.elicits.pending(); n != 0 {
				t.Errorf("%d elicitations for a client that declared none", n)
			}
			fa.decide(a.ID, controlapi.ApprovalApproved, "spiffe://mesh/admin/alice", "")
			h := <-done
			if ct := h.resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/event-stream") {
				final := h.next()
				if final["method"] != nil {
					t.Fatalf("client without elicitation got %v", final)
				}
			}
		})
	}
}
