package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// paddedCall is a tools/call echo body of exactly size bytes, generated as
// it is read (so that the test's own memory does not blur the gateway's),
// whose last byte is held back until release is closed (or the body fails
// when abort is).
type paddedCall struct {
	prefix, suffix string
	pad, off, size int
	release, abort <-chan struct{}
}

func newPaddedCall(size int, release, abort <-chan struct{}) *paddedCall {
	p := &paddedCall{
		prefix: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`,
		suffix: `"}}}`, size: size, release: release, abort: abort,
	}
	p.pad = size - len(p.prefix) - len(p.suffix)
	return p
}

func (p *paddedCall) Read(b []byte) (int, error) {
	if p.off == p.size {
		return 0, io.EOF
	}
	if p.off == p.size-1 {
		select {
		case <-p.release:
		case <-p.abort:
			return 0, io.ErrUnexpectedEOF
		}
	}
	n := 0
	for n < len(b) && p.off < p.size && (p.off < p.size-1 || n == 0) {
		var c byte
		switch {
		case p.off < len(p.prefix):
			c = p.prefix[p.off]
		case p.off < len(p.prefix)+p.pad:
			c = 'x'
		default:
			c = p.suffix[p.off-len(p.prefix)-p.pad]
		}
		b[n] = c
		n++
		p.off++
		if p.off == p.size-1 {
			break // the last byte waits for release
		}
	}
	return n, nil
}

// heapInUse is the heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// hostileTimeout bounds TestGatewayHoldsItsBudgetsAgainstAHostileAgent
// when something hangs.
const hostileTimeout = 5 * time.Minute

// TestGatewayHoldsItsBudgetsAgainstAHostileAgent is the class-5 "done
// when": one admitted agent (other) opens sessions in a loop, churns them,
// and sends many large bodies slowly, against a stdio upstream, while a
// well-behaved agent (fraud) keeps calling. The gateway stays under its
// process budget (child processes counted in /proc) and its body budget
// (what the budget accounts, and the heap), refuses the rest at once with
// one audit event each, and fraud's calls keep being answered.
func TestGatewayHoldsItsBudgetsAgainstAHostileAgent(t *testing.T) {
	const (
		sessionsPerPeer  = 4
		processesPerPeer = 4
		processes        = 6
		maxBytes         = 1 << 20
		bodiesPerPeer    = 4 * maxBytes
		bodiesTotal      = 8 * maxBytes
		slowBodies       = 24
	)
	_, procErr := childProcesses()
	if procErr != nil {
		t.Logf("child processes are not counted here: %v", procErr)
	}
	// Registered first, so it runs after the fixture's Serve has
	// returned: every upstream process is gone.
	t.Cleanup(func() {
		if n, err := childProcesses(); err == nil && n != 0 {
			t.Errorf("%d child processes left after the gateway stopped", n)
		}
	})
	f := newFixture(t, fixtureOpts{stdio: true, config: func(c *Config) {
		c.MaxSessionsPerPeer = sessionsPerPeer
		c.MaxProcessesPerPeer = processesPerPeer
		c.MaxProcesses = processes
		c.Limits.MaxBytes = maxBytes
		c.Bodies = budget.Bodies{PerPeer: bodiesPerPeer, Total: bodiesTotal}
	}})
	// Not testContext's 30 s: the test starts up to 80 upstream processes
	// (the race-instrumented test binary) and 24 large bodies, which on a
	// machine busy with other builds takes longer than on an idle one. The
	// deadline only bounds a hang; every check below is on counts, not on
	// time.
	ctx, cancel := context.WithTimeout(context.Background(), hostileTimeout)
	t.Cleanup(cancel)
	good := f.connect(ctx, f.fraud, "2025-11-25", nil)
	hostile := f.httpClient(f.other)
	maxChildren := 0
	countChildren := func() {
		if n, err := childProcesses(); err == nil {
			maxChildren = max(maxChildren, n)
		}
	}
	echo := func(what string) {
		t.Helper()
		if got, err := callText(ctx, good, "echo", map[string]any{"text": what}); err != nil || got != what {
			t.Fatalf("the well-behaved agent's echo %q = %q, %v", what, got, err)
		}
	}

	// Sessions in a loop: some held, some opened and deleted at once.
	type attempt struct {
		status int
		body   []byte
	}
	var (
		mu       sync.Mutex
		attempts []attempt
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				status, h, b := f.rawPost(ctx, hostile, initializeBody, nil)
				mu.Lock()
				attempts = append(attempts, attempt{status, b})
				countChildren()
				mu.Unlock()
				if sid := h.Get("Mcp-Session-Id"); sid != "" && w < 2 {
					req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, f.url, nil)
					req.Header.Set("Mcp-Session-Id", sid)
					req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
					if resp, err := hostile.Do(req); err == nil {
						resp.Body.Close()
					}
				}
			}
		}()
	}
	for i := range 20 {
		echo(fmt.Sprint("during the session loop ", i))
	}
	wg.Wait()
	refused := 0
	for _, a := range attempts {
		if a.status == http.StatusOK {
			continue
		}
		refused++
		d := rpcError(t, a.body)
		if d.Code != CodeLimited || (d.Reason != reason.TooManySessions && d.Reason != reason.TooManyProcesses) {
			t.Fatalf("a refused session: %d %+v", a.status, d)
		}
	}
	if refused == 0 || refused == len(attempts) {
		t.Fatalf("%d of %d sessions refused: the caps did not apply", refused, len(attempts))
	}
	if n := f.refusals("other", reason.TooManySessions) + f.refusals("other", reason.TooManyProcesses); n != refused {
		t.Fatalf("%d audit events for %d refused sessions, want one each", n, refused)
	}
	if peak := f.gw.caps.processes.Peak(); peak > processes {
		t.Fatalf("the process budget peaked at %d, over %d", peak, processes)
	}
	if procErr == nil && maxChildren > processes {
		t.Fatalf("%d child processes ran at once, over the budget of %d", maxChildren, processes)
	}
	t.Logf("sessions: %d of %d refused; at most %d upstream processes at once (budget %d)", refused, len(attempts), maxChildren, processes)

	// Slow large bodies: every one but its last byte sent.
	heapBefore := heapInUse()
	release, abort := make(chan struct{}), make(chan struct{})
	results := make(chan attempt, slowBodies)
	for range slowBodies {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url, newPaddedCall(maxBytes, release, abort))
			req.ContentLength = maxBytes
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := hostile.Do(req)
			if err != nil {
				results <- attempt{status: -1, body: []byte(err.Error())}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- attempt{resp.StatusCode, b}
		}()
	}
	held := bodiesPerPeer / maxBytes
	for range slowBodies - held {
		var a attempt
		select {
		case a = <-results:
		case <-ctx.Done():
			t.Fatalf("slow bodies were held instead of refused (%d bytes held)", f.gw.caps.bodies.Budget().Used())
		}
		if a.status == -1 {
			t.Fatalf("a slow body failed: %s", a.body)
		}
		d := rpcError(t, a.body)
		if a.status != http.StatusTooManyRequests || d.Code != CodeLimited || d.Reason != reason.OverBudget {
			t.Fatalf("a body over the budget: %d %+v, want 429 over_budget", a.status, d)
		}
	}
	bodies := f.gw.caps.bodies.Budget()
	waitFor(t, ctx, bodies, func(b *budget.Budget) bool { return b.UsedBy(f.peerKey("other")) == bodiesPerPeer })
	heapHeld := heapInUse()
	// The well-behaved agent is still answered, large bodies included:
	// the hostile agent holds only its share of the budget.
	echo("while bodies are held")
	echo(strings.Repeat("y", maxBytes/2))
	if n := f.refusals("other", reason.OverBudget); n != slowBodies-held {
		t.Fatalf("%d audit events for %d bodies refused, want one each", n, slowBodies-held)
	}
	if peak := bodies.Peak(); peak > bodiesTotal {
		t.Fatalf("bodies in memory peaked at %d bytes, over the budget of %d", peak, bodiesTotal)
	}
	// Without the budget the gateway would hold every slow body
	// (slowBodies MiB); with it, the held ones and some slack.
	growth := int64(heapHeld) - int64(heapBefore)
	t.Logf("bodies: %d refused, %d held (%d bytes accounted, peak %d); heap grew %d KiB while they were held",
		slowBodies-held, held, bodies.Used(), bodies.Peak(), growth>>10)
	if growth > bodiesTotal+8<<20 {
		t.Fatalf("the heap grew by %d MiB with %d slow bodies sent, over the body budget of %d MiB plus 8 MiB slack",
			growth>>20, slowBodies, bodiesTotal>>20)
	}

	close(abort)
	for range held {
		<-results
	}
	waitFor(t, ctx, bodies, func(b *budget.Budget) bool { return b.Used() == 0 })
	close(release)
	echo("after the attack")
}
