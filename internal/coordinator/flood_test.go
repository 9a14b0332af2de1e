package coordinator_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/coordinator"
)

// floodEnv carries the coordinator's address to the flood process.
const floodEnv = "AGENTMESH_TEST_FLOOD_ADDR"

// The flood: slow-body joiners and silent connections from many loopback
// sources (127.0.0.1, which the honest nodes use too, and 127.0.0.2 on),
// each reconnecting as soon as the coordinator closes it.
const (
	floodBodySources      = 20 // 127.0.0.1 .. 127.0.0.20
	floodBodyPerSource    = 10
	floodSilentSources    = 4 // 127.0.0.101 .. 127.0.0.104
	floodSilentPerSource  = 10
	floodByteEvery        = 50 * time.Millisecond
	floodReconnectBackoff = time.Second
	// floodWait bounds each wait of the flood test for something that
	// must happen (a node's call served, the budgets filled). It only
	// bounds a hang: on a machine that other builds keep busy, a new
	// connection can wait long for its turn, and the guarantee is that it
	// is served, not how fast.
	floodWait = 3 * time.Minute
)

// TestFloodHelperProcess is the flood, run as a process of its own so that
// its sockets do not count against the coordinator's file descriptors. It
// runs until its standard input closes.
func TestFloodHelperProcess(t *testing.T) {
	addr := os.Getenv(floodEnv)
	if addr == "" {
		t.Skip("only run by TestCoordinatorKeepsServingNodesUnderUnauthenticatedSlowBodyFlood")
	}
	// Bounded in time whatever happens to the test that started it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*floodWait)
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	var wg sync.WaitGroup
	attack := func(src string, slowBody bool) {
		defer wg.Done()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		for ctx.Err() == nil {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				if slowBody {
					slowJoin(ctx, c)
				} else {
					silent(ctx, c)
				}
				c.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(floodReconnectBackoff):
			}
		}
	}
	for s := 1; s <= floodBodySources; s++ {
		for range floodBodyPerSource {
			wg.Add(1)
			go attack("127.0.0."+strconv.Itoa(s), true)
		}
	}
	for s := 101; s < 101+floodSilentSources; s++ {
		for range floodSilentPerSource {
			wg.Add(1)
			go attack("127.0.0."+strconv.Itoa(s), false)
		}
	}
	fmt.Println("flooding")
	wg.Wait()
}

// slowJoin handshakes without a certificate and sends a join request whose
// body comes one byte at a time, until the coordinator closes it.
func slowJoin(ctx context.Context, raw net.Conn) {
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS13})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.HandshakeContext(ctx); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(closed)
	}()
	if _, err := io.WriteString(c, "POST "+controlapi.PathJoin+" HTTP/1.1\r\nHost: coordinator\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"); err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-closed:
			return
		case <-time.After(floodByteEvery):
		}
		if _, err := c.Write([]byte{'{'}); err != nil {
			return
		}
	}
}

// silent connects and never says a word, until the coordinator closes it.
func silent(ctx context.Context, c net.Conn) {
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(closed)
	}()
	select {
	case <-ctx.Done():
	case <-closed:
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors here: %v", err)
	}
	return len(ents)
}

// TestCoordinatorKeepsServingNodesUnderUnauthenticatedSlowBodyFlood: a few
// hundred connections without certificates, from 24 loopback sources,
// hold join bodies open one byte at a time or never handshake, and
// reconnect at once when cut off. Meanwhile joined nodes renew, fetch
// their netmap and make admin calls, each on a fresh connection, and the
// coordinator's file descriptors and goroutines stay within the bound its
// limits set. Every cut-off connection is audited with its reason.
func TestCoordinatorKeepsServingNodesUnderUnauthenticatedSlowBodyFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of a few hundred connections")
	}
	lim := coordinator.Limits{
		Conn: connlimit.Config{
			MaxHandshaking: 32, MaxHandshakingPerSource: 16, HandshakeTimeout: 2 * time.Second,
			MaxUnauthenticated: 32, MaxUnauthenticatedPerSource: 4, UnauthenticatedLifetime: 5 * time.Second,
		},
		JoinBodyTimeout: time.Second,
	}
	m := &mesh{t: t, data: filepath.Join(t.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(), limits: lim}
	m.start()
	ctx := context.Background()
	tool := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")

	// serveNodes makes every call a joined node needs, each on a new
	// connection, so that none rides on one opened before the flood. A
	// node retries what fails (renewal, the netmap watch and audit
	// shipping all do), so each call may be tried again, as long as it
	// succeeds within a bounded time. Under a flood that saturates the
	// CPU, a new connection can still lose its place before its server
	// goroutine reads the ClientHello; tries counts how often that
	// happened.
	tries := 0
	serveNodes := func() error {
		cctx, cancel := context.WithTimeout(ctx, floodWait)
		defer cancel()
		calls := []struct {
			name string
			do   func() error
		}{
			{"renew", func() error { _, err := tool.Renew(cctx); return err }},
			{"netmap", func() error {
				nm, err := agent.Netmap(cctx, -1)
				if err == nil && nm == nil {
					err = errors.New("no netmap")
				}
				return err
			}},
			{"nodes list", func() error {
				var nodes []controlapi.NodeInfo
				return m.admin.Call(cctx, http.MethodGet, controlapi.PathNodes, nil, &nodes)
			}},
		}
		for _, call := range calls {
			for {
				for _, cl := range []interface{ Close() }{tool, agent, m.admin} {
					cl.Close()
				}
				tries++
				err := call.do()
				if err == nil {
					break
				}
				if cctx.Err() != nil {
					return fmt.Errorf("%s: not served within %v: %w", call.name, floodWait, err)
				}
			}
		}
		return nil
	}
	if err := serveNodes(); err != nil {
		t.Fatal(err)
	}
	tries = 0
	runtime.GC()
	baseFDs, baseGoroutines := openFDs(t), runtime.NumGoroutine()
	// The bound the flood must stay under: one descriptor per connection
	// the limits admit, plus up to as many again that were closed and not
	// yet released (Go frees a socket once the goroutine blocked on it has
	// returned, which under a saturated CPU takes a while); per admitted
	// connection a serving goroutine and a reader. The slack covers the
	// honest nodes' own connections, both ends, and the database. Without
	// the limits, the flood holds every one of its 240 connections.
	attackerConns := lim.Conn.MaxHandshaking + lim.Conn.MaxUnauthenticated
	maxFDs := baseFDs + 2*attackerConns + 8
	maxGoroutines := baseGoroutines + 2*attackerConns + 48

	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), floodEnv+"="+m.co.Addr().String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	defer stop()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && !strings.Contains(sc.Text(), "flooding") {
	}
	go io.Copy(io.Discard, stdout)

	// Wait until the flood fills both budgets the attackers can reach.
	for {
		st := m.co.ConnStats()
		if st.Unauthenticated >= lim.Conn.MaxUnauthenticated && st.Handshaking >= lim.Conn.MaxHandshaking/2 {
			break
		}
		select {
		case <-m.co.AuditAppended(): // refusals are being recorded: look again
		case <-time.After(floodWait):
			t.Fatalf("the flood never filled the budgets: %+v", m.co.ConnStats())
		}
	}

	// Serve the nodes round after round while the flood goes on. Between
	// rounds the flood turns over, and the coordinator's clock moves on so
	// that every source gets join tokens back and slow bodies keep coming.
	// The trail must show the budgets full and the join rate biting; each
	// time bound has its own test (connlimit's, and
	// TestJoinBodyMustArriveInTimeOverHTTP1AndHTTP2).
	const rounds = 5
	peakFDs, peakGoroutines := 0, 0
	for round := range rounds {
		if err := serveNodes(); err != nil {
			t.Fatalf("round %d under flood (%+v): %v", round, m.co.ConnStats(), err)
		}
		peakFDs, peakGoroutines = max(peakFDs, openFDs(t)), max(peakGoroutines, runtime.NumGoroutine())
		m.clock.Advance(2 * time.Second)
		select { // let the flood turn over between rounds
		case <-m.co.AuditAppended():
		case <-time.After(10 * time.Second):
		}
		peakFDs, peakGoroutines = max(peakFDs, openFDs(t)), max(peakGoroutines, runtime.NumGoroutine())
	}
	st := m.co.ConnStats()
	stop()
	reasons := map[string]int{}
	for _, e := range m.auditEvents(t, "decision=deny&limit=0") {
		reasons[string(e.Reason)]++
	}
	t.Logf("under flood: %+v; %d calls in %d rounds took %d tries; fds %d (base %d, bound %d), goroutines %d (base %d, bound %d); refusals %v",
		st, 3*rounds, rounds, tries, peakFDs, baseFDs, maxFDs, peakGoroutines, baseGoroutines, maxGoroutines, reasons)
	if peakFDs > maxFDs {
		t.Errorf("open file descriptors reached %d under the flood, over the bound %d", peakFDs, maxFDs)
	}
	if peakGoroutines > maxGoroutines {
		t.Errorf("goroutines reached %d under the flood, over the bound %d", peakGoroutines, maxGoroutines)
	}
	for _, r := range []string{"too_many_connections", "rate_limited"} {
		if reasons[r] == 0 {
			t.Errorf("no audited refusal with reason %s (have %v)", r, reasons)
		}
	}

	// After the flood, and once the join tokens the flood spent from
	// 127.0.0.1 have come back, joining works again from there.
	m.clock.Advance(time.Minute)
	m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "after-flood", "")
}

// TestJoinBodyMustArriveInTimeOverHTTP1AndHTTP2: a join whose body stalls
// is answered 408 body_timeout and audited, on either protocol, while a
// node's netmap long poll, open longer than every body deadline, is not
// cut off.
func TestJoinBodyMustArriveInTimeOverHTTP1AndHTTP2(t *testing.T) {
	m := &mesh{t: t, data: filepath.Join(t.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(),
		limits: coordinator.Limits{JoinBodyTimeout: 50 * time.Millisecond, BodyTimeout: 50 * time.Millisecond}}
	m.start()
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	nm, err := agent.Netmap(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() {
		next, err := agent.Netmap(context.Background(), nm.Version) // waits for the next change
		if err == nil && next == nil {
			err = errors.New("long poll ended with nothing new")
		}
		polled <- err
	}()
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		c := rawClient(t, m, nil, 0)
		tr := c.Transport.(*http.Transport)
		tr.ForceAttemptHTTP2 = proto == "HTTP/2.0"
		pr, pw := io.Pipe()
		go pw.Write([]byte(`{"key_id":`)) // then nothing, ever
		req, _ := http.NewRequest(http.MethodPost, m.co.URL()+controlapi.PathJoin, pr)
		req.ContentLength = 4096
		resp, err := c.Do(req)
		pw.Close()
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Proto != proto || resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "body_timeout") {
			t.Errorf("%s: stalled join body answered %s %d %s, want 408 body_timeout", proto, resp.Proto, resp.StatusCode, b)
		}
	}
	// The long poll has been open longer than every deadline by now, and
	// still delivers the next change.
	m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	if err := <-polled; err != nil {
		t.Fatalf("the netmap long poll was cut off: %v", err)
	}
	// Both stalled joins are accounted for: the first at once, the second
	// in the aggregate its window writes when the coordinator stops.
	m.stop()
	m.start()
	var attempts int64
	for _, e := range m.auditEvents(t, "kind=admin&decision=deny") {
		if e.Action == "node.join" && e.Reason == "body_timeout" {
			attempts += e.Attempts()
		}
	}
	if attempts != 2 {
		t.Errorf("audited body_timeout join refusals account for %d attempts, want 2", attempts)
	}
}
