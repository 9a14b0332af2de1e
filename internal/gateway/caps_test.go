package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const initializeBody = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

// refusals counts the audit events of src with reason.
func (f *fixture) refusals(src string, reason reason.Code) int {
	n := 0
	for _, e := range f.rec.Events() {
		if strings.HasSuffix(e.Src, "/agent/"+src) && e.Reason == reason {
			n++
		}
	}
	return n
}

// checkLimited checks that an answer is the refusal of a cap: HTTP status,
// JSON-RPC error CodeLimited with reason, and an audit event for it that
// says the same, recorded as refused.
func (f *fixture) checkLimited(status int, b []byte, wantStatus int, reason reason.Code) {
	f.t.Helper()
	d := rpcError(f.t, b)
	if status != wantStatus || d.Code != CodeLimited || d.Reason != reason {
		f.t.Fatalf("answer %d %+v, want %d with code %d reason %s", status, d, wantStatus, CodeLimited, reason)
	}
	e, ok := f.rec.ByID(d.EventID)
	if !ok || e.Decision != audit.Deny || e.Reason != reason || e.Outcome != "refused" {
		f.t.Fatalf("audit event %s = %+v (found %v), want a deny %s refused", d.EventID, e, ok, reason)
	}
}

func TestGatewayRefusesSessionsOverThePeerCap(t *testing.T) {
	for _, stdio := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "stdio"}[stdio], func(t *testing.T) {
			f := newFixture(t, fixtureOpts{stdio: stdio, config: func(c *Config) { c.MaxSessionsPerPeer = 2 }})
			ctx := testContext(t)
			fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)
			first := f.rawSession(ctx, fraud, "2025-11-25")
			f.rawSession(ctx, fraud, "2025-11-25")
			upstreamInits := func() int {
				if f.up == nil {
					return 0
				}
				n := 0
				for _, b := range f.up.Bodies() {
					if bytes.Contains(b, []byte(`"initialize"`)) {
						n++
					}
				}
				return n
			}
			before := upstreamInits()
			for range 3 {
				status, _, b := f.rawPost(ctx, fraud, initializeBody, nil)
				f.checkLimited(status, b, http.StatusTooManyRequests, reason.TooManySessions)
			}
			if got := upstreamInits(); got != before {
				t.Fatalf("%d refused initialize requests reached the upstream", got-before)
			}
			if n := f.refusals("fraud", reason.TooManySessions); n != 3 {
				t.Fatalf("%d audit events for 3 refused sessions, want one each", n)
			}
			// The cap is the peer's own: another peer opens its sessions.
			f.rawSession(ctx, other, "2025-11-25")
			// Ending a session frees its place.
			req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, f.url, nil)
			req.Header.Set("Mcp-Session-Id", first)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			resp, err := fraud.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			f.rawSession(ctx, fraud, "2025-11-25")
		})
	}
}

func TestGatewayCapsStdioProcessesPerPeerAndInAll(t *testing.T) {
	f := newFixture(t, fixtureOpts{stdio: true, config: func(c *Config) {
		c.MaxProcessesPerPeer = 2
		c.MaxProcesses = 3
	}})
	ctx := testContext(t)
	fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)
	f.rawSession(ctx, fraud, "2025-11-25")
	f.rawSession(ctx, fraud, "2025-11-25")
	status, _, b := f.rawPost(ctx, fraud, initializeBody, nil)
	f.checkLimited(status, b, http.StatusTooManyRequests, reason.TooManyProcesses)
	f.rawSession(ctx, other, "2025-11-25")
	// Three processes run: the gateway is full, and says so (503).
	status, _, b = f.rawPost(ctx, other, initializeBody, nil)
	f.checkLimited(status, b, http.StatusServiceUnavailable, reason.TooManyProcesses)
	if got := f.gw.caps.processes.Used(); got != 3 {
		t.Fatalf("%d processes counted, want 3", got)
	}
	if n, err := childProcesses(); err == nil && n > 3 {
		t.Fatalf("%d child processes run, over the cap of 3", n)
	}
}

// slowBody is a POST whose body arrives but for its last byte, which
// comes only when finish is called.
type slowBody struct {
	done   chan slowResult
	finish func(last bool)
}

type slowResult struct {
	status int
	body   []byte
	err    error
}

// postSlow sends msg padded to size bytes, all but the last byte at once.
func postSlow(ctx context.Context, c *http.Client, url string, size int) *slowBody {
	pad := size - len(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":""}}}`)
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", pad) + `"}}}`)
	pr, pw := io.Pipe()
	release := make(chan bool, 1)
	go func() {
		if _, err := pw.Write(body[:len(body)-1]); err != nil {
			return
		}
		if <-release {
			pw.Write(body[len(body)-1:])
			pw.Close()
			return
		}
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	s := &slowBody{done: make(chan slowResult, 1)}
	var once sync.Once
	s.finish = func(last bool) { once.Do(func() { release <- last }) }
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := c.Do(req)
		if err != nil {
			s.done <- slowResult{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.done <- slowResult{status: resp.StatusCode, body: b, err: err}
	}()
	return s
}

func TestGatewayRefusesBodiesOverTheBudgetAtOnce(t *testing.T) {
	const maxBytes = 64 << 10
	f := newFixture(t, fixtureOpts{config: func(c *Config) {
		c.Limits.MaxBytes = maxBytes
		c.Bodies = budget.Bodies{PerPeer: 2 * maxBytes, Total: 3 * maxBytes, Timeout: time.Minute}
	}})
	ctx := testContext(t)
	fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)
	bodies := f.gw.caps.bodies.Budget()
	// Two slow bodies take fraud's share.
	var slow []*slowBody
	for range 2 {
		slow = append(slow, postSlow(ctx, fraud, f.url, maxBytes))
	}
	waitFor(t, ctx, bodies, func(b *budget.Budget) bool { return b.UsedBy(f.peerKey("fraud")) == 2*maxBytes })
	// A third is refused from its Content-Length, without waiting for it.
	third := postSlow(ctx, fraud, f.url, maxBytes)
	r := <-third.done
	third.finish(false)
	if r.err != nil {
		t.Fatal(r.err)
	}
	f.checkLimited(r.status, r.body, http.StatusTooManyRequests, reason.OverBudget)
	// Another peer has the rest of the budget: one body, then the gateway
	// is full (503).
	if status, _, b := f.rawPost(ctx, other, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, nil); status != http.StatusOK {
		t.Fatalf("other's ping: %d %s", status, b)
	}
	held := postSlow(ctx, other, f.url, maxBytes)
	waitFor(t, ctx, bodies, func(b *budget.Budget) bool { return b.Used() == 3*maxBytes })
	status, _, b := f.rawPost(ctx, other, `{"jsonrpc":"2.0","id":3,"method":"ping"}`, nil)
	f.checkLimited(status, b, http.StatusServiceUnavailable, reason.OverBudget)
	// The held bodies complete and are answered; the budget empties.
	for _, s := range append(slow, held) {
		s.finish(true)
		if r := <-s.done; r.err != nil || r.status != http.StatusOK {
			t.Fatalf("held body: %d %s %v", r.status, r.body, r.err)
		}
	}
	waitFor(t, ctx, bodies, func(b *budget.Budget) bool { return b.Used() == 0 })
	if bodies.Peak() > 3*maxBytes {
		t.Fatalf("peak %d bytes of bodies held, over the budget of %d", bodies.Peak(), 3*maxBytes)
	}
	if f.up.Received(`"id":3`) {
		t.Fatal("a refused body reached the upstream")
	}
}

func TestGatewayEndsATricklingBodyButNotASlowAnswer(t *testing.T) {
	const timeout = 100 * time.Millisecond
	f := newFixture(t, fixtureOpts{config: func(c *Config) { c.Bodies.Timeout = timeout }})
	ctx := testContext(t)
	c := f.httpClient(f.fraud)
	s := postSlow(ctx, c, f.url, 4<<10)
	r := <-s.done
	s.finish(false)
	if r.err != nil {
		t.Fatal(r.err)
	}
	f.checkLimited(r.status, r.body, http.StatusRequestTimeout, reason.BodyTimeout)
	if f.up.Received(`"name":"echo"`) {
		t.Fatal("the late body reached the upstream")
	}
	// A call whose answer takes longer than the body deadline (the sample
	// tool waits for the client's sampling answer, which comes three
	// deadlines later) completes: the deadline ended with its body.
	cs := f.connect(ctx, f.fraud, "2025-11-25", &mcp.ClientOptions{
		CreateMessageHandler: func(ctx context.Context, _ *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			select {
			case <-time.After(3 * timeout):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "late"}}, nil
		},
	})
	if got, err := callText(ctx, cs, "sample", map[string]any{"text": "q"}); err != nil || got != "late" {
		t.Fatalf("sample = %q, %v: a slow answer was cut", got, err)
	}
}

// waitFor waits until cond holds of b, or ctx ends.
func waitFor(t *testing.T, ctx context.Context, b *budget.Budget, cond func(*budget.Budget) bool) {
	t.Helper()
	for {
		changed := b.Changed()
		if cond(b) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the budget never reached the state waited for")
		case <-changed:
		}
	}
}

// peerKey is the budget key of the fixture's agent name.
func (f *fixture) peerKey(name string) string {
	for n, p := range f.peers {
		if string(n) == name {
			return peerRef{id: p.ID}.budgetKey()
		}
	}
	f.t.Fatalf("no peer %s", name)
	return ""
}

// childProcesses counts the processes whose parent is this one (Linux).
func childProcesses() (int, error) {
	if runtime.GOOS != "linux" {
		return 0, fmt.Errorf("counting child processes needs /proc")
	}
	self := strconv.Itoa(os.Getpid())
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) > 1 && fields[1] == self {
			n++
		}
	}
	return n, nil
}

func TestGatewayCapsRequestsInFlightPerPeerStreamsIncluded(t *testing.T) {
	f := newFixture(t, fixtureOpts{config: func(c *Config) { c.MaxRequestsPerPeer = 2 }})
	ctx := testContext(t)
	fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)
	requests := f.gw.caps.requests
	// Two sessions, each with its standalone GET stream held open.
	var streams []*http.Response
	for range 2 {
		sid := f.rawSession(ctx, fraud, "2025-11-25")
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		resp, err := fraud.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET stream: %v %v", resp, err)
		}
		streams = append(streams, resp)
	}
	key := f.peerKey("fraud")
	waitFor(t, ctx, requests, func(b *budget.Budget) bool { return b.UsedBy(key) == 2 })
	status, _, b := f.rawPost(ctx, fraud, `{"jsonrpc":"2.0","id":9,"method":"ping"}`, nil)
	f.checkLimited(status, b, http.StatusTooManyRequests, reason.TooManyRequests)
	if f.up.Received(`"id":9`) {
		t.Fatal("a refused request reached the upstream")
	}
	// The cap is per peer.
	if status, _, b := f.rawPost(ctx, other, `{"jsonrpc":"2.0","id":10,"method":"ping"}`, nil); status != http.StatusOK {
		t.Fatalf("other's ping: %d %s", status, b)
	}
	// A stream that ends frees its place.
	streams[0].Body.Close()
	waitFor(t, ctx, requests, func(b *budget.Budget) bool { return b.UsedBy(key) == 1 })
	if status, _, b := f.rawPost(ctx, fraud, `{"jsonrpc":"2.0","id":11,"method":"ping"}`, nil); status != http.StatusOK {
		t.Fatalf("ping after a stream ended: %d %s", status, b)
	}
	streams[1].Body.Close()
}
