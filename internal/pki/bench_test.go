package pki_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// BenchmarkIssue measures what the coordinator does per join or renewal:
// check the CSR signature and sign a certificate.
func BenchmarkIssue(b *testing.B) {
	ca := pkitest.NewCA(b, td, t0)
	_, csr := newCSR(b)
	req := pki.IssueRequest{ID: agentID(b, "bench"), Incarnation: "1", TTL: time.Hour, Now: t0}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ca.Issue(csr, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkVerify measures the per-handshake check of a peer certificate.
func BenchmarkVerify(b *testing.B) {
	ca := pkitest.NewCA(b, td, t0)
	leaf := pkitest.Issue(b, ca, agentID(b, "bench"), t0, time.Hour).Leaf
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0))
	chain := []*x509.Certificate{leaf}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(chain, x509.ExtKeyUsageClientAuth); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}
