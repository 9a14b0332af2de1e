package transport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
	"github.com/agentmesh/agentmesh/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mesh is a test CA with a verifier and certificates.
type mesh struct {
	ca *pki.CA
	v  *pki.Verifier
}

func newMesh(t *testing.T) *mesh {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now().Add(-time.Minute))
	return &mesh{ca: ca, v: pki.NewVerifier(pkitest.TrustDomain, []*x509.Certificate{ca.Certificate()}, nil)}
}

func (m *mesh) issue(t *testing.T, kind identity.Kind, name string) (identity.ID, *tls.Certificate) {
	id := pkitest.ID(t, pkitest.TrustDomain, kind, name)
	return id, pkitest.Issue(t, m.ca, id, time.Now().Add(-time.Minute), time.Hour)
}

// serve runs an HTTPS server presenting cert on loopback that answers with
// the identity of the client certificate and the protocol; it returns the
// server's address.
func (m *mesh) serve(t *testing.T, cert *tls.Certificate) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := pki.PeerOf(*r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, p.ID.String()+" "+r.Proto)
	})}
	tlsLn := tls.NewListener(ln, pki.ServerTLS(func() *tls.Certificate { return cert }, m.v, nil))
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(tlsLn) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func get(t *testing.T, c *http.Client, url string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func newClient(t *testing.T, cfg transport.Config) *http.Client {
	t.Helper()
	tr, err := transport.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return transport.Client(tr)
}

func TestClientReachesOnlyTheServerItExpects(t *testing.T) {
	m := newMesh(t)
	agentID, agent := m.issue(t, identity.KindAgent, "fraud")
	toolID, toolCert := m.issue(t, identity.KindTool, "payments")
	_, otherCert := m.issue(t, identity.KindTool, "files")
	tool, other := m.serve(t, toolCert), m.serve(t, otherCert)

	var want atomic.Pointer[identity.ID]
	want.Store(&toolID)
	c := newClient(t, transport.Config{TLS: transport.ClientTLS(func() *tls.Certificate { return agent }, m.v,
		func() (identity.ID, error) { return *want.Load(), nil })})

	got, err := get(t, c, "https://"+tool)
	if err != nil || got != agentID.String()+" HTTP/2.0" {
		t.Fatalf("expected server: %q, %v; want the agent's identity over HTTP/2", got, err)
	}
	// Another node of the mesh holds a valid serving certificate, but it
	// is not the one expected.
	if _, err := get(t, c, "https://"+other); !errors.Is(err, pki.ErrWrongPeer) {
		t.Fatalf("other server: %v, want ErrWrongPeer", err)
	}
	// The expected identity is asked at every handshake: once the netmap
	// names the other node, a new connection reaches it and no longer the
	// first.
	otherID := pkitest.ID(t, pkitest.TrustDomain, identity.KindTool, "files")
	want.Store(&otherID)
	c.CloseIdleConnections()
	if _, err := get(t, c, "https://"+other); err != nil {
		t.Fatalf("after the change: %v", err)
	}
	if _, err := get(t, c, "https://"+tool); !errors.Is(err, pki.ErrWrongPeer) {
		t.Fatalf("old server after the change: %v, want ErrWrongPeer", err)
	}
}

func TestServerIsRefusesWhatItCannotPin(t *testing.T) {
	td := pkitest.TrustDomain
	tool := pkitest.ID(t, td, identity.KindTool, "payments")
	foreign := pkitest.ID(t, "other.mesh", identity.KindTool, "payments")
	for _, tt := range []struct {
		name string
		td   identity.TrustDomain
		want func() (identity.ID, error)
		got  identity.ID
		ok   bool
	}{
		{"expected", td, func() (identity.ID, error) { return tool, nil }, tool, true},
		{"other kind", td, func() (identity.ID, error) { return tool, nil }, pkitest.ID(t, td, identity.KindModel, "payments"), false},
		{"unresolved", td, func() (identity.ID, error) { return identity.ID{}, errors.New("no netmap yet") }, tool, false},
		{"zero expected", td, func() (identity.ID, error) { return identity.ID{}, nil }, identity.ID{}, false},
		{"expected outside the trust domain", td, func() (identity.ID, error) { return foreign, nil }, foreign, false},
		{"no trust domain", "", func() (identity.ID, error) { return tool, nil }, tool, false},
		{"no resolver", td, nil, tool, false},
	} {
		if err := transport.ServerIs(tt.td, tt.want)(tt.got); (err == nil) != tt.ok {
			t.Errorf("%s: ServerIs = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestClientPresentsTheRenewedCertificate(t *testing.T) {
	m := newMesh(t)
	toolID, toolCert := m.issue(t, identity.KindTool, "payments")
	_, first := m.issue(t, identity.KindAgent, "a")
	secondID, second := m.issue(t, identity.KindAgent, "b")
	addr := m.serve(t, toolCert)
	var cur atomic.Pointer[tls.Certificate]
	cur.Store(first)
	c := newClient(t, transport.Config{TLS: transport.ClientTLS(cur.Load, m.v, func() (identity.ID, error) { return toolID, nil })})
	if _, err := get(t, c, "https://"+addr); err != nil {
		t.Fatal(err)
	}
	cur.Store(second)
	c.CloseIdleConnections()
	if got, err := get(t, c, "https://"+addr); err != nil || got != secondID.String()+" HTTP/2.0" {
		t.Fatalf("after renewal: %q, %v", got, err)
	}
}

func TestNewRefusesUnsafeConfigs(t *testing.T) {
	m := newMesh(t)
	toolID, _ := m.issue(t, identity.KindTool, "payments")
	_, agent := m.issue(t, identity.KindAgent, "a")
	good := transport.ClientTLS(func() *tls.Certificate { return agent }, m.v, func() (identity.ID, error) { return toolID, nil })
	noCert := good.Clone()
	noCert.Certificates, noCert.GetClientCertificate = nil, nil
	skips := good.Clone()
	skips.VerifyConnection = nil
	// Go's own verification only checks a host name against the system's
	// roots: any public certificate for the name would pass.
	hostOnly := &tls.Config{Certificates: []tls.Certificate{*agent}}
	dial := (&net.Dialer{}).DialContext
	for _, tt := range []struct {
		name string
		cfg  transport.Config
	}{
		{"neither TLS nor a dialer", transport.Config{}},
		{"TLS and a dialer", transport.Config{TLS: good, Dial: dial}},
		{"no client certificate", transport.Config{TLS: noCert}},
		{"verification skipped without a verifier", transport.Config{TLS: skips}},
		{"no mesh verifier", transport.Config{TLS: hostOnly}},
	} {
		if _, err := transport.New(tt.cfg); !errors.Is(err, transport.ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", tt.name, err)
		}
	}
	old := good.Clone()
	old.MinVersion, old.NextProtos = tls.VersionTLS12, []string{"http/1.1"}
	tr, err := transport.New(transport.Config{TLS: old})
	if err != nil {
		t.Fatal(err)
	}
	if tr.TLSClientConfig.MinVersion != tls.VersionTLS13 || tr.TLSClientConfig.NextProtos != nil || old.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS config not cloned to TLS 1.3 with the transport's ALPN: %+v", tr.TLSClientConfig)
	}
	if tr.Proxy != nil || !tr.DisableCompression || tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout == 0 {
		t.Errorf("transport without the shared rules: %+v", tr)
	}
}

func TestDialerSpeaksHTTP2WithoutTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }),
		Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	var dialed atomic.Int32
	cfg := transport.Config{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	if cfg.Scheme() != "http" || (transport.Config{}).Scheme() != "https" {
		t.Fatal("Scheme")
	}
	c := newClient(t, cfg)
	if got, err := get(t, c, "http://"+ln.Addr().String()); err != nil || got != "HTTP/2.0" || dialed.Load() != 1 {
		t.Fatalf("got %q, %v after %d dials", got, err, dialed.Load())
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	c := transport.Client(&http.Transport{})
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + ln.Addr().String() + "/mcp")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits.Load() != 1 {
		t.Fatalf("status %d after %d requests; want the redirect itself, not followed", resp.StatusCode, hits.Load())
	}
}
