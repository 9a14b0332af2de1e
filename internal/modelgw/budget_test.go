package modelgw

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// slowChat posts a chat body of size bytes as cert, all but its last byte
// at once; the last byte never comes, and the request fails when the test
// ends. It returns the answer when one comes.
func (f *fixture) slowChat(c *http.Client, size int) <-chan result {
	body := chatBody("gpt-4o", `"user":"`+strings.Repeat("x", size-len(chatBody("gpt-4o", `"user":""`)))+`"`)
	pr, pw := io.Pipe()
	go pw.Write([]byte(body[:len(body)-1]))
	f.t.Cleanup(func() { pw.CloseWithError(io.ErrUnexpectedEOF) })
	out := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "https://"+f.addr+"/v1/chat/completions", pr)
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			out <- result{status: -1, body: []byte(err.Error())}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- result{resp.StatusCode, resp.Header, b}
	}()
	return out
}

// waitBudget waits until cond holds of b.
func waitBudget(t *testing.T, b *budget.Budget, cond func(*budget.Budget) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ch := b.Changed()
		if cond(b) {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatal("the body budget never reached the state waited for")
		}
	}
}

func TestGatewayRefusesBodiesOverTheBudgetAtOnce(t *testing.T) {
	const maxBody = 64 << 10 // the fixture's MaxBodyBytes
	f := newFixture(t, fixtureOpts{bodies: budget.Bodies{PerPeer: maxBody, Total: 2 * maxBody, Timeout: time.Minute}})
	fraud := gatewaytest.ID(t, identity.KindAgent, "fraud").String()
	f.slowChat(f.client(f.fraud), maxBody)
	waitBudget(t, f.gw.bodies.Budget(), func(b *budget.Budget) bool { return b.UsedBy(fraud) == maxBody })
	before := len(f.up.Received())

	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	eb := res.errBody(t)
	if res.status != http.StatusTooManyRequests || eb.Reason != reason.OverBudget || eb.Error.Type != "rate_limit_exceeded" ||
		res.header.Get("Retry-After") == "" || eb.AuditEvent == "" {
		t.Fatalf("a body over fraud's share: %d %s %v", res.status, res.body, res.header)
	}
	e, ok := f.rec.ByID(eb.AuditEvent)
	if !ok || e.Decision != audit.Deny || e.Reason != reason.OverBudget || e.Outcome != "refused" || e.Status != http.StatusTooManyRequests {
		t.Fatalf("audit event %+v (found %v), want a refused over_budget deny", e, ok)
	}
	if got := len(f.up.Received()); got != before {
		t.Fatal("a refused body reached the upstream")
	}
	// The share is fraud's own: another caller is answered.
	if res := f.do(f.other, "POST", "/v1/chat/completions", chatBody("gpt-4o-mini", "")); res.status != http.StatusOK {
		t.Fatalf("other's chat: %d %s", res.status, res.body)
	}
}

func TestGatewayEndsATricklingBody(t *testing.T) {
	f := newFixture(t, fixtureOpts{bodies: budget.Bodies{Timeout: 100 * time.Millisecond}})
	res := <-f.slowChat(f.client(f.fraud), 4<<10)
	if res.status == -1 {
		t.Fatalf("POST: %s", res.body)
	}
	eb := res.errBody(t)
	if res.status != http.StatusRequestTimeout || eb.Reason != reason.BodyTimeout || eb.Error.Type != "invalid_request_error" {
		t.Fatalf("a trickling body: %d %s", res.status, res.body)
	}
	if e, ok := f.rec.ByID(eb.AuditEvent); !ok || e.Reason != reason.BodyTimeout || e.Outcome != "refused" {
		t.Fatalf("audit event %+v (found %v)", e, ok)
	}
	if len(f.up.Received()) != 0 {
		t.Fatal("the late body reached the upstream")
	}
	if f.gw.bodies.Budget().Used() != 0 {
		t.Fatal("the refused body is still held in the budget")
	}
}

func TestGatewayCapsRequestsInFlightPerCaller(t *testing.T) {
	gate := make(chan struct{})
	f := newFixture(t, fixtureOpts{gate: gate})
	f.stop()
	f.cfgRequests = 1
	f.start(basePolicy)
	fraud := gatewaytest.ID(t, identity.KindAgent, "fraud").String()
	// A stream held open by the upstream (it waits at the gate).
	c := f.client(f.fraud)
	req, _ := http.NewRequest("POST", "https://"+f.addr+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", streamWithUsage)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	waitBudget(t, f.gw.requests, func(b *budget.Budget) bool { return b.UsedBy(fraud) == 1 })

	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	if eb := res.errBody(t); res.status != http.StatusTooManyRequests || eb.Reason != reason.TooManyRequests || eb.AuditEvent == "" {
		t.Fatalf("a second request in flight: %d %s", res.status, res.body)
	}
	if res := f.do(f.other, "POST", "/v1/chat/completions", chatBody("gpt-4o-mini", "")); res.status != http.StatusOK {
		t.Fatalf("other's chat: %d %s", res.status, res.body)
	}
	close(gate)
	io.Copy(io.Discard, resp.Body)
}
