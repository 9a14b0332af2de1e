// Package connectortest provides in-process fixtures for testing the
// connector and its users: a throwaway mesh CA (built on package pki and
// pkitest) and a stand-in gateway that serves any HTTP handler (typically an
// MCP Go SDK StreamableHTTPHandler) over TLS 1.3 with client certificates
// required, on 127.0.0.1:0.
//
// It is test-only code: keys are generated per test and never persisted.
package connectortest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// GatewayID is the identity the stand-in gateway presents.
const GatewayID = "spiffe://" + string(pkitest.TrustDomain) + "/tool/gateway"

// CA is a throwaway mesh CA (package pki) for trust domain
// pkitest.TrustDomain.
type CA struct {
	ca       *pki.CA
	verifier *pki.Verifier
}

// NewCA creates a CA valid from now.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	v := pki.NewVerifier(pkitest.TrustDomain, []*x509.Certificate{ca.Certificate()}, time.Now)
	return &CA{ca: ca, verifier: v}
}

// Issue returns a certificate for the SPIFFE ID id, valid for an hour.
func (ca *CA) Issue(t testing.TB, id string) *tls.Certificate {
	t.Helper()
	parsed, err := identity.Parse(id)
	if err != nil {
		t.Fatalf("connectortest: %v", err)
	}
	return pkitest.Issue(t, ca.ca, parsed, time.Now(), time.Hour)
}

// ClientTLS returns the client configuration a node with identity id uses
// to reach the stand-in gateway (pki.ClientTLS expecting GatewayID).
func (ca *CA) ClientTLS(t testing.TB, id string) *tls.Config {
	t.Helper()
	cert := ca.Issue(t, id)
	gw, err := identity.Parse(GatewayID)
	if err != nil {
		t.Fatal(err)
	}
	return pki.ClientTLS(func() *tls.Certificate { return cert }, ca.verifier, pki.ExpectServer(gw))
}

// ServerTLS returns the server configuration of a node with identity id:
// TLS 1.3, client certificates from the CA required (pki.ServerTLS).
func (ca *CA) ServerTLS(t testing.TB, id string) *tls.Config {
	t.Helper()
	cert := ca.Issue(t, id)
	return pki.ServerTLS(func() *tls.Certificate { return cert }, ca.verifier, nil)
}

// Gateway is a stand-in gateway: handler served at https://127.0.0.1:PORT
// with mutual TLS 1.3 and HTTP/2. It can be restarted on the same address.
type Gateway struct {
	handler http.Handler
	tls     *tls.Config

	mu   sync.Mutex
	srv  *httptest.Server
	addr string
}

// StartGateway starts handler behind mTLS; it is closed when the test ends.
func StartGateway(t testing.TB, ca *CA, handler http.Handler) *Gateway {
	t.Helper()
	g := &Gateway{handler: handler, tls: ca.ServerTLS(t, GatewayID)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.start(ln)
	t.Cleanup(g.Close)
	return g
}

func (g *Gateway) start(ln net.Listener) {
	srv := httptest.NewUnstartedServer(g.handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.EnableHTTP2 = true
	srv.TLS = g.tls.Clone()
	srv.StartTLS()
	g.srv = srv
	g.addr = ln.Addr().String()
}

// URL returns the gateway's base URL, https://127.0.0.1:PORT.
func (g *Gateway) URL() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return "https://" + g.addr
}

// Resolve has the signature of connector.Config.Resolve.
func (g *Gateway) Resolve(context.Context) (string, error) { return g.URL(), nil }

// Restart closes the gateway, dropping every connection and session, and
// starts it again on the same address.
func (g *Gateway) Restart(t testing.TB) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		g.srv.CloseClientConnections()
		g.srv.Close()
		g.srv = nil
	}
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		t.Fatalf("restart gateway on %s: %v", g.addr, err)
	}
	g.start(ln)
}

// Close stops the gateway. It is idempotent.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		g.srv.CloseClientConnections()
		g.srv.Close()
		g.srv = nil
	}
}
