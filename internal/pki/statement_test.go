package pki

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
)

func TestStatementsVerifyOnlyUnderTheirCAAndPurpose(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("example.mesh", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA(identity.TrustDomain("example.mesh"), now)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"id":"1"}`)
	sig, err := ca.SignStatement("delegation/v1", msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyStatement(nil, "delegation/v1", msg, sig); !errors.Is(err, ErrBadStatement) {
		t.Fatalf("no roots: %v, want ErrBadStatement", err)
	}
	if err := VerifyStatement([]*x509.Certificate{other.Certificate(), ca.Certificate()}, "delegation/v1", msg, sig); err != nil {
		t.Fatalf("bundle with the CA: %v", err)
	}
	for name, tc := range map[string]struct {
		roots   []*x509.Certificate
		purpose string
		msg     []byte
	}{
		"another CA":      {[]*x509.Certificate{other.Certificate()}, "delegation/v1", msg},
		"another purpose": {[]*x509.Certificate{ca.Certificate()}, "delegation/v2", msg},
		"another message": {[]*x509.Certificate{ca.Certificate()}, "delegation/v1", []byte(`{"id":"2"}`)},
		"empty purpose":   {[]*x509.Certificate{ca.Certificate()}, "", msg},
	} {
		if err := VerifyStatement(tc.roots, tc.purpose, tc.msg, sig); !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s: %v, want ErrBadStatement", name, err)
		}
	}
	if _, err := ca.SignStatement("has space", msg); !errors.Is(err, ErrBadStatement) {
		t.Errorf("purpose with a space signed: %v", err)
	}
}
