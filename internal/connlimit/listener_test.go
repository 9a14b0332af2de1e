package connlimit_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// refusals collects what a Listener reports.
type refusals struct {
	mu  sync.Mutex
	got []reason.Code
	ch  chan reason.Code
}

func newRefusals() *refusals { return &refusals{ch: make(chan reason.Code, 256)} }

func (r *refusals) on(_ net.Addr, reason reason.Code) { r.ch <- reason }

// next waits for the next reported refusal.
func (r *refusals) next(t *testing.T) reason.Code {
	t.Helper()
	select {
	case reason := <-r.ch:
		return reason
	case <-time.After(10 * time.Second):
		t.Fatal("no refusal reported")
		return ""
	}
}

// holdingListener accepts connections and keeps them open, as a server
// waiting for a handshake would; accepted receives each one.
func holdingListener(t *testing.T, cfg connlimit.Config) (*connlimit.Listener, chan net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := connlimit.NewListener(inner, cfg)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	accepted := make(chan net.Conn, 64)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return l, accepted
}

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer waits until the server closes c.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("connection still open: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// wantStats checks the listener's budgets.
func wantStats(t *testing.T, l *connlimit.Listener, want connlimit.Stats) {
	t.Helper()
	if got := l.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

// waitAccepted waits for the listener to hand out n connections.
func waitAccepted(t *testing.T, accepted chan net.Conn, n int) {
	t.Helper()
	for range n {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("connection not accepted")
		}
	}
}

func TestListenerRefusesASourceOverItsHandshakeLimit(t *testing.T) {
	r := newRefusals()
	l, accepted := holdingListener(t, connlimit.Config{MaxHandshakingPerSource: 2, OnRefuse: r.on})
	dialFrom(t, "127.0.0.2", l.Addr().String())
	dialFrom(t, "127.0.0.2", l.Addr().String())
	waitAccepted(t, accepted, 2)
	c := dialFrom(t, "127.0.0.2", l.Addr().String())
	if got := r.next(t); got != reason.TooManyConnections {
		t.Fatalf("reason %s", got)
	}
	closedByServer(t, c)
	// Another source is not affected, and the first two stay.
	dialFrom(t, "127.0.0.3", l.Addr().String())
	waitAccepted(t, accepted, 1)
	wantStats(t, l, connlimit.Stats{Handshaking: 3})
}

func TestListenerClosesTheLongestHandshakeWhenFull(t *testing.T) {
	r := newRefusals()
	l, accepted := holdingListener(t, connlimit.Config{MaxHandshaking: 2, OnRefuse: r.on})
	oldest := dialFrom(t, "127.0.0.2", l.Addr().String())
	waitAccepted(t, accepted, 1)
	dialFrom(t, "127.0.0.3", l.Addr().String())
	waitAccepted(t, accepted, 1)
	dialFrom(t, "127.0.0.4", l.Addr().String())
	if got := r.next(t); got != reason.TooManyConnections {
		t.Fatalf("reason %s", got)
	}
	closedByServer(t, oldest)
	waitAccepted(t, accepted, 1)
	wantStats(t, l, connlimit.Stats{Handshaking: 2})
}

func TestListenerClosesAHandshakeThatTakesTooLong(t *testing.T) {
	r := newRefusals()
	l, _ := holdingListener(t, connlimit.Config{HandshakeTimeout: 20 * time.Millisecond, OnRefuse: r.on})
	c := dialFrom(t, "127.0.0.2", l.Addr().String())
	if got := r.next(t); got != reason.HandshakeTimeout {
		t.Fatalf("reason %s", got)
	}
	closedByServer(t, c)
	wantStats(t, l, connlimit.Stats{})
}

// tlsServer serves HTTP over TLS on a limited listener; clients with a
// certificate from ca count as authenticated. Handlers answer with headers
// at once and then block until release is closed, so connections stay
// busy.
type tlsServer struct {
	l       *connlimit.Listener
	ca      *pki.CA
	roots   *x509.CertPool
	release chan struct{}
}

func startTLSServer(t *testing.T, cfg connlimit.Config) *tlsServer {
	t.Helper()
	now := time.Now()
	ca := pkitest.NewCA(t, pkitest.TrustDomain, now)
	cert := pkitest.Issue(t, ca, pkitest.ID(t, pkitest.TrustDomain, identity.KindAdmin, "server"), now, time.Hour)
	verifier := pki.NewVerifier(pkitest.TrustDomain, []*x509.Certificate{ca.Certificate()}, time.Now)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{l: connlimit.NewListener(inner, cfg), ca: ca, roots: x509.NewCertPool(), release: make(chan struct{})}
	s.roots.AddCert(ca.Certificate())
	base := &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
	tlsCfg := s.l.ServerTLS(base, func(cs tls.ConnectionState) bool {
		_, err := verifier.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
		return len(cs.PeerCertificates) > 0 && err == nil
	})
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tls.NewListener(s.l, tlsCfg))
	}()
	t.Cleanup(func() {
		close(s.release)
		srv.Close()
		<-done
	})
	return s
}

// handshake opens a TLS connection from src, with a client certificate when
// withCert is set, and makes a request on it: an answer means the server
// has sorted the connection. It returns the connection and the error that
// ended the attempt.
func (s *tlsServer) handshake(t *testing.T, src string, withCert bool) (*tls.Conn, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: s.roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if withCert {
		cfg.Certificates = []tls.Certificate{*pkitest.Issue(t, s.ca, pkitest.ID(t, pkitest.TrustDomain, identity.KindAgent, "node"), time.Now(), time.Hour)}
	}
	c := tls.Client(dialFrom(t, src, s.l.Addr().String()), cfg)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return c, err
	}
	// In TLS 1.3 the server's verdict on the client arrives after the
	// client's handshake is done: a request makes it show.
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return c, err
	}
	status := make([]byte, len("HTTP/1.1 200"))
	if _, err := io.ReadFull(c, status); err != nil {
		return c, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

func TestAuthenticatedClientsDoNotCompeteWithUnauthenticatedOnes(t *testing.T) {
	r := newRefusals()
	s := startTLSServer(t, connlimit.Config{MaxUnauthenticated: 3, MaxUnauthenticatedPerSource: 2, OnRefuse: r.on})
	var anon []*tls.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		c, err := s.handshake(t, src, false)
		if err != nil {
			t.Fatal(err)
		}
		anon = append(anon, c)
	}
	wantStats(t, s.l, connlimit.Stats{Unauthenticated: 3})
	// A third anonymous connection from one source fails its handshake.
	if c, err := s.handshake(t, "127.0.0.2", false); err == nil {
		closedByServer(t, c)
	}
	if got := r.next(t); got != reason.TooManyConnections {
		t.Fatalf("reason %s", got)
	}
	// Nodes with certificates, even from the busy sources, get in.
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.1"} {
		if _, err := s.handshake(t, src, true); err != nil {
			t.Fatalf("authenticated client from %s refused: %v", src, err)
		}
	}
	wantStats(t, s.l, connlimit.Stats{Unauthenticated: 3, Authenticated: 3})
	// A new anonymous source pushes out the oldest anonymous connection.
	if _, err := s.handshake(t, "127.0.0.4", false); err != nil {
		t.Fatal(err)
	}
	if got := r.next(t); got != reason.TooManyConnections {
		t.Fatalf("reason %s", got)
	}
	closedByServer(t, anon[0])
	wantStats(t, s.l, connlimit.Stats{Unauthenticated: 3, Authenticated: 3})
}

func TestUnauthenticatedConnectionIsClosedAfterItsLifetimeHoweverBusy(t *testing.T) {
	r := newRefusals()
	s := startTLSServer(t, connlimit.Config{UnauthenticatedLifetime: 20 * time.Millisecond, OnRefuse: r.on})
	if _, err := s.handshake(t, "127.0.0.2", true); err != nil {
		t.Fatal(err)
	}
	anon, err := s.handshake(t, "127.0.0.2", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.next(t); got != reason.ConnLifetime {
		t.Fatalf("reason %s", got)
	}
	closedByServer(t, anon)
	// The node's connection, older than the lifetime too, keeps its place.
	wantStats(t, s.l, connlimit.Stats{Authenticated: 1})
}

func TestSourceKeyGroupsIPv6By64AndUnmapsIPv4(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.2:5000":            "127.0.0.2",
		"[::ffff:10.1.2.3]:1":       "10.1.2.3",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:81":   "2001:db8:1:2::/64",
		"[fe80::1%eth0]:80":         "fe80::/64",
	} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := connlimit.SourceKey(a); got != want {
			t.Errorf("SourceKey(%s) = %s, want %s", addr, got, want)
		}
	}
}

// stallingConn passes its first write (a ClientHello) and blocks every
// later one until release is closed, telling stalled when it blocks.
type stallingConn struct {
	net.Conn
	writes  int
	stalled chan struct{}
	release chan struct{}
}

func (c *stallingConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes > 1 {
		if c.writes == 2 {
			close(c.stalled)
		}
		<-c.release
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func TestListenerMakesRoomWithASilentConnectionBeforeAStartedHandshake(t *testing.T) {
	r := newRefusals()
	s := startTLSServer(t, connlimit.Config{MaxHandshaking: 2, OnRefuse: r.on})
	// The oldest handshake has sent its ClientHello, and waits.
	started := &stallingConn{Conn: dialFrom(t, "127.0.0.2", s.l.Addr().String()), stalled: make(chan struct{}), release: make(chan struct{})}
	defer close(started.release)
	hsDone := make(chan error, 1)
	go func() {
		hsDone <- tls.Client(started, &tls.Config{RootCAs: s.roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}).Handshake()
	}()
	select {
	case <-started.stalled: // the server has answered the ClientHello
	case <-time.After(10 * time.Second):
		t.Fatal("handshake did not start")
	}
	quiet := dialFrom(t, "127.0.0.3", s.l.Addr().String())
	// Wait for the server to count the quiet one; then the budget is full.
	for s.l.Stats().Handshaking < 2 {
		runtime.Gosched()
	}
	dialFrom(t, "127.0.0.4", s.l.Addr().String())
	if got := r.next(t); got != reason.TooManyConnections {
		t.Fatalf("reason %s", got)
	}
	closedByServer(t, quiet)
	wantStats(t, s.l, connlimit.Stats{Handshaking: 2})
}
