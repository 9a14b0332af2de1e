package gateway

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// waitPolicy lets agent:fraud call echo and wait, itself and for Alice,
// who may too.
const waitPolicy = `{"grants": [
  {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["echo", "wait"]},
  {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["echo", "wait"], "on_behalf_of": ["user:alice@example.com"]},
  {"src": ["user:alice@example.com"], "dst": ["tool:payments-db"], "tools": ["echo", "wait"]},
]}`

// cutAnswer is what a client got for a call in flight.
type cutAnswer struct {
	status int
	ctype  string
	body   []byte
	err    error
}

// startWait calls the wait tool on session sid ("": a stateless
// 2026-07-28 call) (size progress
// notifications before it waits for ever) and returns the answer to come.
// With size > 0 it returns once the first notification arrived, with size
// 0 once the upstream runs the call (up, the count of its wait calls).
func (f *fixture) startWait(t *testing.T, ctx context.Context, c *http.Client, sid string, id, size int, up func() int) <-chan cutAnswer {
	t.Helper()
	before := 0
	if up != nil {
		before = up()
	}
	meta := `"progressToken":"p` + strconv.Itoa(id) + `"`
	if sid == "" {
		meta += `,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}`
	}
	body := `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call","params":{"name":"wait","arguments":{"size":` +
		strconv.Itoa(size) + `},"_meta":{` + meta + `}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sid == "" {
		// A stateless (2026-07-28) call, in no session.
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", "wait")
	} else {
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		req.Header.Set("Mcp-Session-Id", sid)
	}
	out := make(chan cutAnswer, 1)
	progressed := make(chan struct{})
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			out <- cutAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		a := cutAnswer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type")}
		var all strings.Builder
		br := bufio.NewReader(resp.Body)
		seen := false
		for {
			line, err := br.ReadString('\n')
			all.WriteString(line)
			if !seen && strings.Contains(line, "notifications/progress") {
				seen = true
				close(progressed)
			}
			if err != nil {
				if err != io.EOF {
					a.err = err
				}
				break
			}
		}
		a.body = []byte(all.String())
		out <- a
	}()
	if size > 0 {
		select {
		case <-progressed:
		case a := <-out:
			t.Fatalf("the call ended before its first notification: %d %s %v", a.status, a.body, a.err)
		case <-ctx.Done():
			t.Fatal("no progress notification")
		}
		return out
	}
	for up() == before {
		select {
		case a := <-out:
			t.Fatalf("the call ended before the upstream ran it: %d %s %v", a.status, a.body, a.err)
		case <-ctx.Done():
			t.Fatal("the upstream never ran the call")
		case <-time.After(5 * time.Millisecond): // poll
		}
	}
	return out
}

// wantCut checks that the call in flight ended with the gateway's error
// for its id: CodeDenied, why, and the id of an event of kind that records
// the ending with why. With json set, the answer had not started: the
// error comes as a JSON 403 (an in-process upstream has started an empty
// event stream by then: the error is its one event).
func (f *fixture) wantCut(t *testing.T, ctx context.Context, answer <-chan cutAnswer, id int, why reason.Code, kind audit.Kind, json bool) {
	t.Helper()
	var a cutAnswer
	select {
	case a = <-answer:
	case <-ctx.Done():
		t.Fatal("the call in flight did not end")
	}
	sse := strings.HasPrefix(a.ctype, "text/event-stream")
	if json && !sse && a.status != http.StatusForbidden {
		t.Errorf("answer status %d, want 403", a.status)
	}
	if !json && !sse {
		t.Errorf("answer of type %q, want the event stream it started", a.ctype)
	}
	// The error is the last message: after any notification.
	body := strings.TrimSpace(string(a.body))
	if sse {
		i := strings.LastIndex(body, "data: ")
		if i < 0 {
			t.Fatalf("no event in %q (%v)", body, a.err)
		}
		body = body[i+len("data: "):]
	}
	if !strings.Contains(body, `"id":`+strconv.Itoa(id)+`,`) {
		t.Errorf("answer %q is not for id %d", body, id)
	}
	d := rpcError(t, []byte(body))
	if d.Code != CodeDenied || d.Reason != why || d.EventID == "" {
		t.Fatalf("the call in flight ended with %+v, want %d %s and an event id (body %q)", d, CodeDenied, why, a.body)
	}
	if !strings.Contains(body, string(why)) {
		t.Errorf("the message does not name %s: %q", why, body)
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.ID == d.EventID && e.Kind == kind && e.Reason == why && e.Outcome == audit.OutcomeClosed
	}); err != nil {
		t.Fatalf("no %s event %s recording %s: %v", kind, d.EventID, why, err)
	}
}

// waitCalls counts the wait calls the upstream runs (HTTP), or the calls
// of session sid awaiting their answer from its process (stdio).
func (f *fixture) waitCalls(sid string) func() int {
	if f.up != nil {
		return func() int { return f.up.Calls.Count("tool:wait") }
	}
	b, _ := f.gw.sessions.get(sid).up.(*stdioBridge)
	return func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.calls)
	}
}

// upstreamKinds are the upstream kinds a cut is tested against.
var upstreamKinds = []struct {
	name string
	o    fixtureOpts
}{
	{"http", fixtureOpts{}},
	{"in-process", fixtureOpts{inProcess: true}},
	{"stdio", fixtureOpts{stdio: true}},
}

func TestGatewayTellsACallInFlightItsDelegationWasRevoked(t *testing.T) {
	for _, k := range upstreamKinds {
		t.Run(k.name, func(t *testing.T) {
			f := newFixture(t, k.o)
			if f.up != nil {
				t.Cleanup(f.up.Calls.Release) // before the gateway stops
			}
			f.gw.Update(f.delegState(waitPolicy, nil, nil))
			ctx := testContext(t)
			alice, aliceID := f.delegate(t, delegOpts{})
			cl := f.delegClient(f.fraud, alice)
			sid := f.rawSession(ctx, cl, "2025-11-25")
			streaming := f.startWait(t, ctx, cl, sid, 41, 1, nil)
			// A call whose answer has not started: no notification.
			pending := f.startWait(t, ctx, cl, sid, 42, 0, f.waitCalls(sid))
			// The same node, itself, keeps its call.
			own := f.httpClient(f.fraud)
			ownSID := f.rawSession(ctx, own, "2025-11-25")
			kept := f.startWait(t, ctx, own, ownSID, 43, 1, nil)

			f.gw.Update(f.delegState(waitPolicy, []string{aliceID}, nil))
			f.wantCut(t, ctx, streaming, 41, reason.DelegationRevoked, audit.KindSession, false)
			f.wantCut(t, ctx, pending, 42, reason.DelegationRevoked, audit.KindSession, true)
			select {
			case a := <-kept:
				t.Fatalf("the node's own call ended too: %d %s %v", a.status, a.body, a.err)
			default:
			}
		})
	}
}

func TestGatewayTellsACallInFlightItsPeerWasRevoked(t *testing.T) {
	for _, k := range upstreamKinds {
		t.Run(k.name, func(t *testing.T) {
			f := newFixture(t, k.o)
			if f.up != nil {
				t.Cleanup(f.up.Calls.Release) // before the gateway stops
			}
			f.gw.Update(f.state(waitPolicy))
			ctx := testContext(t)
			cl := f.httpClient(f.fraud)
			sid := f.rawSession(ctx, cl, "2025-11-25")
			streaming := f.startWait(t, ctx, cl, sid, 51, 1, nil)
			pending := f.startWait(t, ctx, cl, sid, 52, 0, f.waitCalls(sid))
			f.gw.Update(f.state(waitPolicy, func(p map[identity.Name]admission.Peer) {
				fraud := p["fraud"]
				fraud.Revoked = true
				p["fraud"] = fraud
			}))
			// The connection is closed for the peer, after its requests
			// in flight were told why.
			f.wantCut(t, ctx, streaming, 51, reason.Revoked, audit.KindConnection, false)
			f.wantCut(t, ctx, pending, 52, reason.Revoked, audit.KindConnection, true)
		})
	}
}
