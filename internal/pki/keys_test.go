package pki_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

func TestKeyPEMRoundTrip(t *testing.T) {
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("key PEM does not start with a PKCS#8 header: %.30q", b)
	}
	got, err := pki.DecodeKeyPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) {
		t.Fatal("decoded key differs")
	}
}

func TestDecodeKeyPEMRefusesOtherInput(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edPEM, err := pki.EncodeKeyPEM(edKey)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := pki.NewKey()
	ecPEM, _ := pki.EncodeKeyPEM(ecKey)
	tests := map[string][]byte{
		"empty":         nil,
		"not PEM":       []byte("hello"),
		"wrong type":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage DER":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"ed25519 key":   edPEM,
		"two keys":      append(bytes.Clone(ecPEM), ecPEM...),
		"trailing junk": append(bytes.Clone(ecPEM), "junk"...),
	}
	for name, in := range tests {
		if _, err := pki.DecodeKeyPEM(in); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestCertPEMBundleRoundTrip(t *testing.T) {
	a, b := pkitest.NewCA(t, td, t0), pkitest.NewCA(t, td, t0)
	bundle := pki.EncodeCertPEM(a.Certificate(), b.Certificate())
	certs, err := pki.DecodeCertsPEM(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(a.Certificate()) || !certs[1].Equal(b.Certificate()) {
		t.Fatalf("decoded %d certificates, want both in order", len(certs))
	}
}

func TestDecodeCertsPEMRefusesOtherInput(t *testing.T) {
	good := pki.EncodeCertPEM(pkitest.NewCA(t, td, t0).Certificate())
	key, _ := pki.NewKey()
	keyPEM, _ := pki.EncodeKeyPEM(key)
	tests := map[string][]byte{
		"empty":         nil,
		"whitespace":    []byte("\n\n"),
		"not PEM":       []byte("hello"),
		"a key":         keyPEM,
		"cert then key": append(bytes.Clone(good), keyPEM...),
		"trailing junk": append(bytes.Clone(good), "junk"...),
		"bad DER":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}),
	}
	for name, in := range tests {
		if _, err := pki.DecodeCertsPEM(in); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestCSRPEMRoundTripChecksSignature(t *testing.T) {
	key, _ := pki.NewKey()
	der, err := pki.CreateCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.DecodeCSRPEM(pki.EncodeCSRPEM(der))
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.URIs) != 0 || len(csr.DNSNames) != 0 || csr.Subject.CommonName != "" {
		t.Errorf("CSR carries names: %v %v %q", csr.URIs, csr.DNSNames, csr.Subject.CommonName)
	}
	// Flip a bit in the signature.
	bad := bytes.Clone(der)
	bad[len(bad)-1] ^= 1
	if _, err := pki.DecodeCSRPEM(pki.EncodeCSRPEM(bad)); !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("tampered CSR: err = %v, want ErrBadCSR", err)
	}
	if _, err := pki.DecodeCSRPEM([]byte("nope")); !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("not PEM: err = %v, want ErrBadCSR", err)
	}
}

func TestIssueAcceptsEd25519AndRefusesOtherKeys(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	der, err := pki.CreateCSR(edKey)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	if _, _, err := ca.Issue(csr, pki.IssueRequest{ID: agentID(t, "a"), Incarnation: "1", TTL: time.Hour, Now: t0}); err != nil {
		t.Fatalf("ed25519 CSR: %v", err)
	}
	if _, err := pki.CreateCSR(nil); err == nil || !strings.Contains(err.Error(), "nil key") {
		t.Errorf("CreateCSR(nil) = %v", err)
	}
}
