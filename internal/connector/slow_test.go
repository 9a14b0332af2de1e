package connector_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
)

// lineSignal is a log destination that closes seen once a write contains
// want.
type lineSignal struct {
	want string
	seen chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
	once sync.Once
}

func (l *lineSignal) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if bytes.Contains(p, []byte(l.want)) {
		l.once.Do(func() { close(l.seen) })
	}
	return l.buf.Write(p)
}

func (l *lineSignal) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestConnectorSaysItIsStillWaitingForASlowGateway: a gateway that starts
// a stdio upstream per session takes seconds to answer; the connector says
// once that it is still waiting, and for what. The gateway here holds the
// tool call until the line is logged, and the threshold is injected (every
// request waits longer than a nanosecond), so nothing depends on how fast
// the machine is.
func TestConnectorSaysItIsStillWaitingForASlowGateway(t *testing.T) {
	const want = "connect: still waiting for files to answer tools/call"
	log := &lineSignal{want: want, seen: make(chan struct{})}
	ca := connectortest.NewCA(t)
	up := newUpstream(t)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte(`"method":"tools/call"`)) {
			select {
			case <-log.seen:
			case <-r.Context().Done():
				return
			}
		}
		up.ServeHTTP(w, r)
	})
	gw := connectortest.StartGateway(t, ca, slow)
	c, err := connector.New(connector.Config{
		Resolve:   gw.Resolve,
		TLS:       ca.ClientTLS(t, "spiffe://test.mesh/agent/tester"),
		Logger:    slog.New(slog.NewTextHandler(log, nil)),
		Service:   "files",
		SlowAfter: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testContext(t)
	cs, _ := connectStdio(t, ctx, c, newClient(nil), "")
	if _, err := callEcho(ctx, cs, "x"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), want); n != 1 {
		t.Errorf("logged %d times that it is still waiting for the call, want once:\n%s", n, log.String())
	}
}

// TestConnectorIsQuietAboutAnAnswerBeforeTheThreshold: a request answered
// before SlowAfter logs nothing about waiting.
func TestConnectorIsQuietAboutAnAnswerBeforeTheThreshold(t *testing.T) {
	log := &lineSignal{want: "still waiting", seen: make(chan struct{})}
	ca := connectortest.NewCA(t)
	gw := connectortest.StartGateway(t, ca, newUpstream(t))
	c, err := connector.New(connector.Config{
		Resolve:   gw.Resolve,
		TLS:       ca.ClientTLS(t, "spiffe://test.mesh/agent/tester"),
		Logger:    slog.New(slog.NewTextHandler(log, nil)),
		SlowAfter: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testContext(t)
	cs, _ := connectStdio(t, ctx, c, newClient(nil), "")
	if _, err := callEcho(ctx, cs, "x"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "still waiting") {
		t.Errorf("logged a wait for answers that came at once:\n%s", log.String())
	}
}
