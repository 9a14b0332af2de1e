package pki

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// IssueUser signs a person's certificate over the public key in csr: one
// URI SAN (the user's SPIFFE ID), Subject CommonName = the e-mail address,
// Subject SerialNumber = req.Incarnation (the login), client auth only: a
// person presents it to the coordinator and never serves. req.ID is
// ignored; the other fields are checked as for Issue.
func (ca *CA) IssueUser(csr *x509.CertificateRequest, user identity.UserID, req IssueRequest) (*x509.Certificate, []byte, error) {
	fail := func(err error) (*x509.Certificate, []byte, error) {
		return nil, nil, fmt.Errorf("issue %s: %w", user, err)
	}
	if _, err := identity.NewUserID(user.TrustDomain, user.User); err != nil {
		return fail(err)
	}
	if user.TrustDomain != ca.td {
		return fail(fmt.Errorf("%w: %s is not in %s", ErrWrongTrustDomain, user, ca.td))
	}
	if csr == nil {
		return fail(fmt.Errorf("%w: none given", ErrBadCSR))
	}
	if err := csr.CheckSignature(); err != nil {
		return fail(fmt.Errorf("%w: signature: %w", ErrBadCSR, err))
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return fail(err)
	}
	tmpl, err := ca.leafTemplate(user.URL(), string(user.User), req, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
	if err != nil {
		return fail(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return fail(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fail(err)
	}
	return cert, der, nil
}

// VerifyUser checks a person's client certificate chain as Verify checks a
// node's, and returns the user it names. A node certificate is refused
// here, as a user certificate is refused by Verify.
func (v *Verifier) VerifyUser(chain []*x509.Certificate) (identity.UserID, error) {
	leaf, err := v.verifyChain(chain, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return identity.UserID{}, fmt.Errorf("verify certificate: %w", err)
	}
	id, err := identity.UserFromCertificate(leaf)
	if err != nil {
		return identity.UserID{}, fmt.Errorf("verify certificate: %w", err)
	}
	if id.TrustDomain != v.td {
		return identity.UserID{}, fmt.Errorf("verify certificate: %w: %s is not in %s", ErrWrongTrustDomain, id, v.td)
	}
	return id, nil
}
