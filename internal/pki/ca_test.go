package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

func TestNewCAIsNameConstrainedRootThatCannotSignIntermediates(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	c := ca.Certificate()
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA=%v MaxPathLen=%d MaxPathLenZero=%v, want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage = %v", c.KeyUsage)
	}
	if len(c.PermittedURIDomains) != 1 || c.PermittedURIDomains[0] != string(td) {
		t.Errorf("PermittedURIDomains = %q, want [%q]", c.PermittedURIDomains, td)
	}
	if got := c.NotAfter.Sub(t0); got != pki.CALifetime {
		t.Errorf("lifetime from now = %v, want %v", got, pki.CALifetime)
	}
	if len(ca.Fingerprint()) != 64 || ca.Fingerprint() != strings.ToLower(ca.Fingerprint()) || ca.Fingerprint() != pki.Fingerprint(c) {
		t.Errorf("Fingerprint = %q, want 64 lowercase hex digits equal to pki.Fingerprint", ca.Fingerprint())
	}
	if ca.TrustDomain() != td {
		t.Errorf("TrustDomain = %q", ca.TrustDomain())
	}
}

func TestNewCARefusesInvalidTrustDomain(t *testing.T) {
	if _, err := pki.NewCA("Bad Domain", t0); !errors.Is(err, identity.ErrBadTrustDomain) {
		t.Fatalf("err = %v, want ErrBadTrustDomain", err)
	}
}

func TestIssueAndVerifyRoundTrip(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	_, csr := newCSR(t)
	id := toolID(t, "payments-db")
	req := pki.IssueRequest{
		ID: id, Incarnation: "inc-1", TTL: time.Hour, Now: t0,
		DNSNames: []string{"payments.internal"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	cert, der, err := ca.Issue(csr, req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert.Raw, der) {
		t.Error("returned certificate and DER differ")
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"one URI SAN equal to the ID", len(cert.URIs) == 1 && cert.URIs[0].String() == id.String()},
		{"CommonName is the node name", cert.Subject.CommonName == "payments-db"},
		{"incarnation in Subject SerialNumber", pki.Incarnation(cert) == "inc-1"},
		{"NotBefore is now minus skew", cert.NotBefore.Equal(t0.Add(-pki.ClockSkew))},
		{"NotAfter is now plus TTL", cert.NotAfter.Equal(t0.Add(time.Hour))},
		{"serial is positive and at most 128 bits", cert.SerialNumber.Sign() > 0 && cert.SerialNumber.BitLen() <= 128},
		{"client and server auth", len(cert.ExtKeyUsage) == 2 && cert.ExtKeyUsage[0] == x509.ExtKeyUsageClientAuth && cert.ExtKeyUsage[1] == x509.ExtKeyUsageServerAuth},
		{"digital signature only", cert.KeyUsage == x509.KeyUsageDigitalSignature},
		{"not a CA", !cert.IsCA && cert.BasicConstraintsValid},
		{"DNS SAN", len(cert.DNSNames) == 1 && cert.DNSNames[0] == "payments.internal"},
		{"IP SAN", len(cert.IPAddresses) == 1 && cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1))},
		{"public key from the CSR", cert.PublicKey.(*ecdsa.PublicKey).Equal(csr.PublicKey)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("issued certificate: want %s", c.name)
		}
	}
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0.Add(30*time.Minute)))
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		got, err := v.Verify([]*x509.Certificate{cert}, usage)
		if err != nil || got != id {
			t.Errorf("Verify(usage %v) = %v, %v; want %v", usage, got, err, id)
		}
	}
}

func TestIssueSerialNumbersDiffer(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	a := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	b := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour)
	if a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
		t.Fatal("two certificates got the same serial number")
	}
}

func TestIssueIgnoresNamesInCSR(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	evil := agentID(t, "admin")
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin"},
		DNSNames: []string{"coordinator"},
		URIs:     []*url.URL{evil.URL()},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	want := agentID(t, "worker")
	cert, _, err := ca.Issue(csr, pki.IssueRequest{ID: want, Incarnation: "1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.FromCertificate(cert)
	if err != nil || got != want || cert.Subject.CommonName != "worker" || len(cert.DNSNames) != 0 {
		t.Fatalf("certificate names %v (CN %q, DNS %q), %v; want only %v", got, cert.Subject.CommonName, cert.DNSNames, err, want)
	}
}

func TestIssueChecksCSRSignature(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	_, csr := newCSR(t)
	tampered := *csr
	tampered.Signature = bytes.Clone(csr.Signature)
	tampered.Signature[len(tampered.Signature)-1] ^= 0xff
	_, _, err := ca.Issue(&tampered, pki.IssueRequest{ID: agentID(t, "a"), Incarnation: "1", TTL: time.Hour, Now: t0})
	if !errors.Is(err, pki.ErrBadCSR) {
		t.Fatalf("tampered CSR: err = %v, want ErrBadCSR", err)
	}
	if _, _, err := ca.Issue(nil, pki.IssueRequest{ID: agentID(t, "a"), Incarnation: "1", TTL: time.Hour, Now: t0}); !errors.Is(err, pki.ErrBadCSR) {
		t.Fatalf("nil CSR: err = %v, want ErrBadCSR", err)
	}
}

func TestIssueEnforcesTTLBounds(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	_, csr := newCSR(t)
	tests := []struct {
		ttl time.Duration
		ok  bool
	}{
		{0, false},
		{-time.Hour, false},
		{pki.MinTTL - time.Second, false},
		{pki.MinTTL, true},
		{pki.DefaultTTL, true},
		{pki.MaxTTL, true},
		{pki.MaxTTL + time.Second, false},
	}
	for _, tt := range tests {
		_, _, err := ca.Issue(csr, pki.IssueRequest{ID: agentID(t, "a"), Incarnation: "1", TTL: tt.ttl, Now: t0})
		if tt.ok && err != nil {
			t.Errorf("TTL %v: %v", tt.ttl, err)
		}
		if !tt.ok && !errors.Is(err, pki.ErrBadTTL) {
			t.Errorf("TTL %v: err = %v, want ErrBadTTL", tt.ttl, err)
		}
	}
}

func TestIssueRefusesBadRequests(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	_, csr := newCSR(t)
	good := pki.IssueRequest{ID: agentID(t, "a"), Incarnation: "1", TTL: time.Hour, Now: t0}
	tests := []struct {
		name   string
		modify func(*pki.IssueRequest)
		want   error // nil: any error
	}{
		{"zero ID", func(r *pki.IssueRequest) { r.ID = identity.ID{} }, nil},
		{"other trust domain", func(r *pki.IssueRequest) { r.ID = pkitest.ID(t, "other.mesh", identity.KindAgent, "a") }, pki.ErrWrongTrustDomain},
		{"subdomain of the trust domain", func(r *pki.IssueRequest) { r.ID = pkitest.ID(t, "sub."+td, identity.KindAgent, "a") }, pki.ErrWrongTrustDomain},
		{"no incarnation", func(r *pki.IssueRequest) { r.Incarnation = "" }, nil},
		{"incarnation with spaces", func(r *pki.IssueRequest) { r.Incarnation = "a b" }, nil},
		{"incarnation too long", func(r *pki.IssueRequest) { r.Incarnation = strings.Repeat("a", 65) }, nil},
		{"zero time", func(r *pki.IssueRequest) { r.Now = time.Time{} }, nil},
		{"before the CA", func(r *pki.IssueRequest) { r.Now = t0.Add(-time.Hour) }, pki.ErrExpired},
		{"beyond the CA's life", func(r *pki.IssueRequest) { r.Now = t0.Add(pki.CALifetime - time.Minute) }, pki.ErrExpired},
		{"bad DNS name", func(r *pki.IssueRequest) { r.DNSNames = []string{"a b"} }, nil},
		{"bad IP", func(r *pki.IssueRequest) { r.IPs = []net.IP{{1, 2, 3}} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := good
			tt.modify(&req)
			_, _, err := ca.Issue(csr, req)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCASaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := pkitest.NewCA(t, td, t0)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", fi.Mode().Perm())
	}
	loaded, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() || loaded.TrustDomain() != td {
		t.Fatalf("loaded CA %s in %s, want %s in %s", loaded.Fingerprint(), loaded.TrustDomain(), ca.Fingerprint(), td)
	}
	// The loaded CA signs certificates the original's verifier accepts.
	_, csr := newCSR(t)
	cert, _, err := loaded.Issue(csr, pki.IssueRequest{ID: agentID(t, "a"), Incarnation: "1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0))
	if _, err := v.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want ca.key and ca.crt", len(entries))
	}
}

func TestCASaveNeverOverwritesAKey(t *testing.T) {
	dir := t.TempDir()
	if err := pkitest.NewCA(t, td, t0).Save(dir); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	if err := pkitest.NewCA(t, td, t0).Save(dir); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second Save: err = %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	if !bytes.Equal(before, after) {
		t.Fatal("ca.key was replaced")
	}
}

func TestLoadCARefusesKeyReadableByOthers(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		dir := t.TempDir()
		if err := pkitest.NewCA(t, td, t0).Save(dir); err != nil {
			t.Fatal(err)
		}
		keyPath := filepath.Join(dir, pki.CAKeyFile)
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := pki.LoadCA(dir)
		if !errors.Is(err, pki.ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+keyPath) {
			t.Errorf("mode %#o: err = %v, want ErrKeyPermissions naming chmod 600 %s", mode, err, keyPath)
		}
	}
}

func TestLoadCARefusesMismatchedKeyAndMissingFiles(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := pkitest.NewCA(t, td, t0).Save(a); err != nil {
		t.Fatal(err)
	}
	if err := pkitest.NewCA(t, td, t0).Save(b); err != nil {
		t.Fatal(err)
	}
	// Put b's certificate beside a's key.
	crt, _ := os.ReadFile(filepath.Join(b, pki.CACertFile))
	if err := os.WriteFile(filepath.Join(a, pki.CACertFile), crt, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(a); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: err = %v", err)
	}
	if _, err := pki.LoadCA(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty dir: err = %v, want ErrNotExist", err)
	}
}

func TestIncarnationOfNilIsEmpty(t *testing.T) {
	if got := pki.Incarnation(nil); got != "" {
		t.Fatalf("Incarnation(nil) = %q", got)
	}
}
