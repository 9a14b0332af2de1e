package pki_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestVerifyRefusesBadCertificates(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	other := pkitest.NewCA(t, td, t0)
	foreignTD := pkitest.NewCA(t, "other.mesh", t0)
	good := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour).Leaf
	fromOther := pkitest.Issue(t, other, agentID(t, "a"), t0, time.Hour).Leaf
	fromForeign := pkitest.Issue(t, foreignTD, pkitest.ID(t, "other.mesh", identity.KindAgent, "a"), t0, time.Hour).Leaf

	// A CA outside our control, constrained to our trust domain, signing
	// certificates Issue would never make.
	raw := newRawCA(t, string(td))
	unconstrained := newRawCA(t, "")
	id := agentID(t, "a").String()
	noURI := raw.leaf(t, nil, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
	twoURIs := raw.leaf(t, []string{id, agentID(t, "b").String()}, x509.ExtKeyUsageClientAuth)
	notSPIFFE := raw.leaf(t, []string{"https://" + string(td) + "/agent/a"}, x509.ExtKeyUsageClientAuth)
	serverOnly := raw.leaf(t, []string{id}, x509.ExtKeyUsageServerAuth)
	outsideConstraint := raw.leaf(t, []string{"spiffe://evil.mesh/agent/a"}, x509.ExtKeyUsageClientAuth)
	otherTDUnconstrained := unconstrained.leaf(t, []string{"spiffe://evil.mesh/agent/a"}, x509.ExtKeyUsageClientAuth)

	roots := []*x509.Certificate{ca.Certificate(), raw.cert, unconstrained.cert, foreignTD.Certificate()}
	tests := []struct {
		name   string
		chain  []*x509.Certificate
		now    time.Time
		usage  x509.ExtKeyUsage
		want   error
		reason reason.Code
	}{
		{"no certificate", nil, t0, x509.ExtKeyUsageClientAuth, pki.ErrNoCertificate, "no_certificate"},
		{"expired", []*x509.Certificate{good}, t0.Add(time.Hour + time.Second), x509.ExtKeyUsageClientAuth, pki.ErrExpired, "expired"},
		{"not yet valid", []*x509.Certificate{good}, t0.Add(-2 * time.Minute), x509.ExtKeyUsageClientAuth, pki.ErrNotYetValid, "not_yet_valid"},
		{"another CA", []*x509.Certificate{fromOther}, t0, x509.ExtKeyUsageClientAuth, pki.ErrUnknownCA, "unknown_ca"},
		{"another CA with its CA in the chain", []*x509.Certificate{fromOther, other.Certificate()}, t0, x509.ExtKeyUsageClientAuth, pki.ErrUnknownCA, "unknown_ca"},
		{"trusted CA of another trust domain", []*x509.Certificate{fromForeign}, t0, x509.ExtKeyUsageClientAuth, pki.ErrWrongTrustDomain, "wrong_trust_domain"},
		{"name outside the CA's constraint", []*x509.Certificate{outsideConstraint}, t0, x509.ExtKeyUsageClientAuth, pki.ErrWrongTrustDomain, "wrong_trust_domain"},
		{"unconstrained CA, other trust domain", []*x509.Certificate{otherTDUnconstrained}, t0, x509.ExtKeyUsageClientAuth, pki.ErrWrongTrustDomain, "wrong_trust_domain"},
		{"no URI SAN", []*x509.Certificate{noURI}, t0, x509.ExtKeyUsageClientAuth, identity.ErrBadID, "bad_identity"},
		{"two URI SANs", []*x509.Certificate{twoURIs}, t0, x509.ExtKeyUsageClientAuth, identity.ErrBadID, "bad_identity"},
		{"URI that is not SPIFFE", []*x509.Certificate{notSPIFFE}, t0, x509.ExtKeyUsageClientAuth, identity.ErrBadID, "bad_identity"},
		{"server-only certificate as client", []*x509.Certificate{serverOnly}, t0, x509.ExtKeyUsageClientAuth, pki.ErrWrongUsage, "wrong_usage"},
		{"unsupported usage", []*x509.Certificate{good}, t0, x509.ExtKeyUsageAny, pki.ErrWrongUsage, "wrong_usage"},
		{"the CA itself", []*x509.Certificate{ca.Certificate()}, t0, x509.ExtKeyUsageClientAuth, pki.ErrBadCertificate, "bad_certificate"},
		{"overlong chain", []*x509.Certificate{good, good, good, good, good}, t0, x509.ExtKeyUsageClientAuth, pki.ErrBadCertificate, "bad_certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := pki.NewVerifier(td, roots, fixedNow(tt.now))
			id, err := v.Verify(tt.chain, tt.usage)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, %v; want %v", id, err, tt.want)
			}
			if !id.IsZero() {
				t.Errorf("refused certificate yielded identity %v", id)
			}
			if got := pki.ReasonOf(err); got != tt.reason {
				t.Errorf("ReasonOf = %q, want %q", got, tt.reason)
			}
		})
	}
}

func TestVerifyAcceptsChainWithCAAppended(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	leaf := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour).Leaf
	v := pki.NewVerifier(td, []*x509.Certificate{ca.Certificate()}, fixedNow(t0))
	if id, err := v.Verify([]*x509.Certificate{leaf, ca.Certificate()}, x509.ExtKeyUsageClientAuth); err != nil || id != agentID(t, "a") {
		t.Fatalf("Verify = %v, %v", id, err)
	}
}

func TestVerifierSetRootsSwapsTrust(t *testing.T) {
	oldCA, newCA := pkitest.NewCA(t, td, t0), pkitest.NewCA(t, td, t0)
	fromOld := pkitest.Issue(t, oldCA, agentID(t, "a"), t0, time.Hour).Leaf
	fromNew := pkitest.Issue(t, newCA, agentID(t, "a"), t0, time.Hour).Leaf
	v := pki.NewVerifier(td, []*x509.Certificate{oldCA.Certificate()}, fixedNow(t0))

	check := func(step string, cert *x509.Certificate, want error) {
		t.Helper()
		if _, err := v.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth); !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", step, err, want)
		}
	}
	check("old bundle, old cert", fromOld, nil)
	check("old bundle, new cert", fromNew, pki.ErrUnknownCA)
	v.SetRoots([]*x509.Certificate{oldCA.Certificate(), newCA.Certificate()})
	check("both, old cert", fromOld, nil)
	check("both, new cert", fromNew, nil)
	v.SetRoots([]*x509.Certificate{newCA.Certificate()})
	check("new bundle, old cert", fromOld, pki.ErrUnknownCA)
	if len(v.Roots()) != 1 {
		t.Errorf("Roots() has %d entries", len(v.Roots()))
	}
	v.SetRoots(nil)
	check("empty bundle", fromNew, pki.ErrUnknownCA)
}

func TestNilVerifierRefusesEverything(t *testing.T) {
	ca := pkitest.NewCA(t, td, t0)
	leaf := pkitest.Issue(t, ca, agentID(t, "a"), t0, time.Hour).Leaf
	var v *pki.Verifier
	if _, err := v.Verify([]*x509.Certificate{leaf}, x509.ExtKeyUsageClientAuth); !errors.Is(err, pki.ErrUnknownCA) {
		t.Fatalf("err = %v, want ErrUnknownCA", err)
	}
}

func TestReasonOfNilAndUnknownErrors(t *testing.T) {
	if got := pki.ReasonOf(nil); got != "" {
		t.Errorf("ReasonOf(nil) = %q", got)
	}
	if got := pki.ReasonOf(errors.New("something")); got != "bad_certificate" {
		t.Errorf("ReasonOf(other) = %q", got)
	}
}
