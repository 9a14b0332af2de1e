package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// result is what both ends of one handshake saw.
type result struct {
	serverErr, clientErr     error
	serverState, clientState tls.ConnectionState
	serverGot                string // application data the server received
	clientAddr               string
}

// handshake runs one TLS connection over 127.0.0.1 between the two
// configurations: the client writes "hi" after its handshake, the server
// reads it and answers "ok", so that a refusal on either side shows up as
// an error on both.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type serverResult struct {
		err   error
		state tls.ConnectionState
		got   string
	}
	done := make(chan serverResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- serverResult{err: err}
			return
		}
		defer c.Close()
		// A safety net so a broken test fails instead of hanging; not
		// synchronisation.
		c.SetDeadline(time.Now().Add(10 * time.Second))
		sc := tls.Server(c, serverCfg)
		var r serverResult
		if r.err = sc.Handshake(); r.err == nil {
			buf := make([]byte, 2)
			var n int
			n, r.err = io.ReadFull(sc, buf)
			r.got = string(buf[:n])
			if r.err == nil {
				_, r.err = sc.Write([]byte("ok"))
			}
		}
		r.state = sc.ConnectionState()
		done <- r
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(conn, clientCfg)
	var res result
	res.clientAddr = conn.LocalAddr().String()
	if res.clientErr = cc.Handshake(); res.clientErr == nil {
		if _, res.clientErr = cc.Write([]byte("hi")); res.clientErr == nil {
			buf := make([]byte, 2)
			_, res.clientErr = io.ReadFull(cc, buf)
		}
	}
	res.clientState = cc.ConnectionState()
	cc.Close()
	s := <-done
	res.serverErr, res.serverState, res.serverGot = s.err, s.state, s.got
	return res
}

// refusals records OnRefused calls.
type refusals struct {
	mu   sync.Mutex
	list []refusal
}

type refusal struct {
	remote string
	reason reason.Code
	err    error
}

func (r *refusals) record(remote string, why reason.Code, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, refusal{remote, why, err})
}

func (r *refusals) get() []refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]refusal(nil), r.list...)
}

func static(c *tls.Certificate) func() *tls.Certificate { return func() *tls.Certificate { return c } }

func TestTLSHandshakes(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0.Add(-24*time.Hour))
	otherCA := pkitest.NewCA(t, td, t0)
	serverID, clientID := toolID(t, "payments-db"), agentID(t, "fraud-detector")
	serverCert := pkitest.Issue(t, ca, serverID, t0, time.Hour)
	clientCert := pkitest.Issue(t, ca, clientID, t0, time.Hour)
	expiredClient := pkitest.Issue(t, ca, clientID, t0.Add(-2*time.Hour), time.Hour)
	foreignClient := pkitest.Issue(t, otherCA, clientID, t0, time.Hour)
	roots := []*x509.Certificate{ca.Certificate()}

	tests := []struct {
		name       string
		client     func(v *pki.Verifier) *tls.Config
		clientTime time.Time
		// Expectations: nil errors mean success on that side.
		serverErr, clientErr error
		refused              reason.Code
	}{
		{
			name: "mutual authentication",
			client: func(v *pki.Verifier) *tls.Config {
				return pki.ClientTLS(static(clientCert), v, pki.ExpectServer(serverID))
			},
		},
		{
			name:      "client without certificate",
			client:    func(v *pki.Verifier) *tls.Config { return pki.ClientTLS(nil, v, pki.ExpectServer(serverID)) },
			serverErr: pki.ErrNoCertificate, clientErr: errAny, refused: reason.NoCertificate,
		},
		{
			name: "TLS 1.2 client",
			client: func(*pki.Verifier) *tls.Config {
				return &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true, Certificates: []tls.Certificate{*clientCert}}
			},
			serverErr: errAny, clientErr: errAny, refused: reason.TLSVersion,
		},
		{
			name: "expired client",
			client: func(v *pki.Verifier) *tls.Config {
				return pki.ClientTLS(static(expiredClient), v, pki.ExpectServer(serverID))
			},
			serverErr: pki.ErrExpired, clientErr: errAny, refused: reason.Expired,
		},
		{
			name: "client from another CA",
			client: func(v *pki.Verifier) *tls.Config {
				return pki.ClientTLS(static(foreignClient), v, pki.ExpectServer(serverID))
			},
			serverErr: pki.ErrUnknownCA, clientErr: errAny, refused: reason.UnknownCA,
		},
		{
			name: "server is not the wanted identity",
			client: func(v *pki.Verifier) *tls.Config {
				return pki.ClientTLS(static(clientCert), v, pki.ExpectServer(toolID(t, "other")))
			},
			serverErr: errAny, clientErr: pki.ErrWrongPeer,
		},
		{
			name:      "no server identity check",
			client:    func(v *pki.Verifier) *tls.Config { return pki.ClientTLS(static(clientCert), v, nil) },
			serverErr: errAny, clientErr: pki.ErrWrongPeer,
		},
		{
			name: "server certificate expired by the client's clock",
			client: func(v *pki.Verifier) *tls.Config {
				return pki.ClientTLS(static(clientCert), v, pki.ExpectServer(serverID))
			},
			clientTime: t0.Add(2 * time.Hour),
			serverErr:  errAny, clientErr: pki.ErrExpired,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var refused refusals
			var peers []pki.PeerInfo
			var peersMu sync.Mutex
			serverV := pki.NewVerifier(td, roots, fixedNow(t0))
			serverCfg := pki.NewServerTLS(pki.ServerOptions{
				Certificate: static(serverCert),
				Verifier:    serverV,
				OnRefused:   refused.record,
				OnPeer: func(p pki.PeerInfo) {
					peersMu.Lock()
					defer peersMu.Unlock()
					peers = append(peers, p)
				},
			})
			clientTime := tt.clientTime
			if clientTime.IsZero() {
				clientTime = t0
			}
			res := handshake(t, serverCfg, tt.client(pki.NewVerifier(td, roots, fixedNow(clientTime))))
			checkErr(t, "server", res.serverErr, tt.serverErr)
			checkErr(t, "client", res.clientErr, tt.clientErr)
			got := refused.get()
			switch {
			case tt.refused == "" && len(got) != 0:
				t.Errorf("unexpected refusals %+v", got)
			case tt.refused != "" && (len(got) != 1 || got[0].reason != tt.refused || got[0].remote != res.clientAddr || got[0].err == nil):
				t.Errorf("refusals = %+v, want one %q from %s", got, tt.refused, res.clientAddr)
			}
			if tt.serverErr != nil {
				if res.serverGot != "" {
					t.Errorf("refused server received application data %q", res.serverGot)
				}
				return
			}
			// Success: both sides know who the other is.
			if res.serverState.Version != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", res.serverState.Version)
			}
			if p, err := pki.PeerOf(res.serverState); err != nil || p.ID != clientID {
				t.Errorf("server sees peer %v, %v; want %v", p.ID, err, clientID)
			}
			if p, err := pki.PeerOf(res.clientState); err != nil || p.ID != serverID {
				t.Errorf("client sees peer %v, %v; want %v", p.ID, err, serverID)
			}
			peersMu.Lock()
			defer peersMu.Unlock()
			if len(peers) != 1 || peers[0].ID != clientID || peers[0].Remote != res.clientAddr || peers[0].Incarnation != "test" {
				t.Errorf("OnPeer calls = %+v, want one for %v from %s", peers, clientID, res.clientAddr)
			}
		})
	}
}

// errAny in a table means "some error", whatever it is.
var errAny = errors.New("any error")

func checkErr(t *testing.T, side string, got, want error) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s: unexpected error %v", side, got)
	case want == errAny && got == nil:
		t.Errorf("%s: succeeded, want an error", side)
	case want != nil && want != errAny && !errors.Is(got, want):
		t.Errorf("%s: err = %v, want %v", side, got, want)
	}
}

func TestServerTLSPresentsRenewedCertificateLive(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	serverID := toolID(t, "payments-db")
	var current atomic.Pointer[tls.Certificate]
	first := pkitest.Issue(t, ca, serverID, t0, time.Hour)
	current.Store(first)
	roots := []*x509.Certificate{ca.Certificate()}
	v := pki.NewVerifier(td, roots, fixedNow(t0))
	serverCfg := pki.ServerTLS(current.Load, v, nil)
	clientCfg := pki.ClientTLS(static(pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)), v, pki.ExpectServer(serverID))

	for i, want := range []*tls.Certificate{first, pkitest.Issue(t, ca, serverID, t0, time.Hour)} {
		current.Store(want)
		res := handshake(t, serverCfg, clientCfg)
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake %d: server %v, client %v", i, res.serverErr, res.clientErr)
		}
		if got := res.clientState.PeerCertificates[0]; !got.Equal(want.Leaf) {
			t.Errorf("handshake %d: server presented serial %v, want %v", i, got.SerialNumber, want.Leaf.SerialNumber)
		}
	}
}

func TestServerTLSWithoutCertificateFailsClosed(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0))
	serverCfg := pki.ServerTLS(static(nil), v, nil)
	clientCfg := pki.ClientTLS(static(pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)), v, pki.ExpectServer(toolID(t, "x")))
	if res := handshake(t, serverCfg, clientCfg); res.serverErr == nil || res.clientErr == nil {
		t.Fatalf("handshake without a server certificate: server %v, client %v", res.serverErr, res.clientErr)
	}
}

func TestConfigsAreTLS13Only(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0))
	configs := map[string]*tls.Config{
		"ServerTLS":       pki.ServerTLS(nil, v, nil),
		"ClientTLS":       pki.ClientTLS(nil, v, nil),
		"PinnedClientTLS": pki.PinnedClientTLS(ca.Fingerprint()),
	}
	for name, c := range configs {
		if c.MinVersion != tls.VersionTLS13 || c.MaxVersion != tls.VersionTLS13 {
			t.Errorf("%s: versions %x..%x, want TLS 1.3 only", name, c.MinVersion, c.MaxVersion)
		}
	}
}

func TestPinnedClientTLS(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	impostor := pkitest.NewCA(t, td, t0)
	id := pkitest.ID(t, td, identity.KindAdmin, "coordinator")
	leaf := pkitest.Issue(t, ca, id, time.Now(), time.Hour)
	fakeLeaf := pkitest.Issue(t, impostor, id, time.Now(), time.Hour)
	oldLeaf := pkitest.Issue(t, ca, id, time.Now().Add(-3*time.Hour), time.Hour)
	with := func(l *tls.Certificate, extra ...*x509.Certificate) tls.Certificate {
		c := *l
		c.Certificate = [][]byte{l.Certificate[0]}
		for _, e := range extra {
			c.Certificate = append(c.Certificate, e.Raw)
		}
		return c
	}
	tests := []struct {
		name        string
		fingerprint string
		served      tls.Certificate
		ok          bool
	}{
		{"right fingerprint", ca.Fingerprint(), with(leaf, ca.Certificate()), true},
		{"wrong fingerprint", impostor.Fingerprint(), with(leaf, ca.Certificate()), false},
		{"fingerprint in upper case", strings.ToUpper(ca.Fingerprint()), with(leaf, ca.Certificate()), false},
		{"malformed fingerprint", "abc", with(leaf, ca.Certificate()), false},
		{"server omits the CA", ca.Fingerprint(), with(leaf), false},
		{"impostor appends the pinned CA", ca.Fingerprint(), with(fakeLeaf, ca.Certificate()), false},
		{"expired server certificate", ca.Fingerprint(), with(oldLeaf, ca.Certificate()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{tt.served}}
			res := handshake(t, serverCfg, pki.PinnedClientTLS(tt.fingerprint))
			if tt.ok {
				if res.clientErr != nil || res.serverErr != nil || res.serverGot != "hi" {
					t.Fatalf("client %v, server %v, got %q", res.clientErr, res.serverErr, res.serverGot)
				}
				return
			}
			if !errors.Is(res.clientErr, pki.ErrFingerprintMismatch) {
				t.Errorf("client err = %v, want ErrFingerprintMismatch", res.clientErr)
			}
			if res.serverGot != "" {
				t.Errorf("server received %q from a client that should have stopped", res.serverGot)
			}
		})
	}
}
