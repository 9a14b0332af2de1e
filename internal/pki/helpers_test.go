package pki_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

const td = pkitest.TrustDomain

// t0 is the fixed time tests start from.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func agentID(t testing.TB, name string) identity.ID {
	return pkitest.ID(t, td, identity.KindAgent, name)
}

func toolID(t testing.TB, name string) identity.ID {
	return pkitest.ID(t, td, identity.KindTool, name)
}

func newCSR(t testing.TB) (*ecdsa.PrivateKey, *x509.CertificateRequest) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// rawCA is a CA made directly with crypto/x509, so tests can sign
// certificates that (*pki.CA).Issue would refuse to make.
type rawCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newRawCA(t testing.TB, permitted string) *rawCA {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "raw CA"},
		NotBefore:             t0.Add(-time.Hour),
		NotAfter:              t0.Add(24 * 365 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if permitted != "" {
		tmpl.PermittedURIDomains = []string{permitted}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &rawCA{cert: cert, key: key}
}

// leaf signs a node certificate with the given URI SANs and usages, valid
// t0-1m .. t0+1h.
func (ca *rawCA) leaf(t testing.TB, uris []string, usage ...x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		NotBefore:             t0.Add(-time.Minute),
		NotAfter:              t0.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// fixedNow returns a clock function stuck at t.
func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }
