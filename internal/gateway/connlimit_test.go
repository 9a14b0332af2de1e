package gateway

import (
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayBoundsConnectionsThatNeverHandshake: anybody who can reach the
// gateway's port can open TCP connections and never send a ClientHello.
// The gateway holds at most its handshake budget of them, audits the ones
// it refuses or closes, and an admitted agent still gets through.
func TestGatewayBoundsConnectionsThatNeverHandshake(t *testing.T) {
	const (
		maxHandshaking = 8
		perSource      = 4
		sources        = 10
	)
	f := newFixture(t, fixtureOpts{config: func(c *Config) {
		c.Conns = connlimit.Config{MaxHandshaking: maxHandshaking, MaxHandshakingPerSource: perSource,
			HandshakeTimeout: time.Minute}
	}})
	ctx := testContext(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(f.url, "https://"), "/mcp")

	// The flood: perSource+1 silent connections from each of several
	// loopback sources (127.0.0.2, 127.0.0.3, ...).
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for s := range sources {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))}}
		for range perSource + 1 {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatalf("dial from 127.0.0.%d: %v", 2+s, err)
			}
			flood = append(flood, c)
		}
	}

	// An admitted agent is answered, flood or not.
	c := f.httpClient(f.fraud)
	sid := f.rawSession(ctx, c, "2025-06-18")
	status, _, b := f.rawPost(ctx, c,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"through the flood"}}}`,
		map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-06-18"})
	if status != http.StatusOK || !strings.Contains(string(b), "through the flood") {
		t.Fatalf("the agent got %d %s", status, b)
	}

	// Every connection the gateway let go reads as closed at once; those it
	// still holds time out. It holds no more than its budget.
	open := 0
	for _, c := range flood {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			open++
		}
	}
	if open > maxHandshaking {
		t.Errorf("the gateway holds %d silent connections, want at most %d", open, maxHandshaking)
	}

	// The refusals are in the trail, with the listener's reason.
	refused := 0
	for _, e := range f.rec.Events() {
		if e.Reason == reason.TooManyConnections && e.Outcome == "refused" && e.Dst == f.gwID.String() {
			refused++
		}
	}
	if want := len(flood) - maxHandshaking; refused < want {
		t.Errorf("%d refused connections audited, want at least %d", refused, want)
	}
}
