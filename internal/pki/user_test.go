package pki_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

func TestUserCertificateIsNoNodeCertificate(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	_, csr := newCSR(t)
	u, _ := identity.ParseUser("alice@example.com")
	uid, err := identity.NewUserID(td, u)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := ca.IssueUser(csr, uid, pki.IssueRequest{Incarnation: "login-1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != uid.String() || cert.Subject.CommonName != "alice@example.com" ||
		pki.Incarnation(cert) != "login-1" || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("user certificate: URIs %v CN %q usage %v", cert.URIs, cert.Subject.CommonName, cert.ExtKeyUsage)
	}
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0.Add(time.Minute)))
	if got, err := v.VerifyUser([]*x509.Certificate{cert}); err != nil || got != uid {
		t.Fatalf("VerifyUser = %v, %v", got, err)
	}
	// Where a node is expected, a person's certificate is refused.
	if _, err := v.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth); !errors.Is(err, identity.ErrBadID) {
		t.Fatalf("Verify accepted a user certificate: %v", err)
	}
	// It cannot serve.
	if _, err := v.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("a user certificate verified for server auth")
	}
	// And a node's certificate is no person's.
	node, _, err := ca.Issue(csr, pki.IssueRequest{ID: toolID(t, "db"), Incarnation: "inc-1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyUser([]*x509.Certificate{node}); !errors.Is(err, identity.ErrBadID) {
		t.Fatalf("VerifyUser accepted a node certificate: %v", err)
	}
	// Expired is expired, as for nodes.
	late := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0.Add(2*time.Hour)))
	if _, err := late.VerifyUser([]*x509.Certificate{cert}); !errors.Is(err, pki.ErrExpired) {
		t.Fatalf("expired user certificate: %v", err)
	}
	// Another mesh's user is refused at issue.
	other, _ := identity.NewUserID("other.mesh", u)
	if _, _, err := ca.IssueUser(csr, other, pki.IssueRequest{Incarnation: "x", TTL: time.Hour, Now: t0}); !errors.Is(err, pki.ErrWrongTrustDomain) {
		t.Fatalf("IssueUser for another trust domain: %v", err)
	}
}
