package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// maxChain bounds the certificates a peer may present, so that a hostile
// peer cannot make verification expensive. agentmesh chains are one leaf
// (the CA cannot sign intermediates); a little slack allows bundles that
// carry the CA too.
const maxChain = 4

// Verifier checks peer certificates: a chain to one of its roots at the
// time its clock says, the wanted extended key usage, and exactly one
// SPIFFE ID in its trust domain. The roots can be swapped atomically while
// the Verifier is in use. A nil *Verifier refuses everything.
type Verifier struct {
	td    identity.TrustDomain
	now   func() time.Time
	roots atomic.Pointer[rootSet]
}

// rootSet is an immutable CA bundle.
type rootSet struct {
	certs []*x509.Certificate
	pool  *x509.CertPool
}

// NewVerifier returns a Verifier for trust domain td with the given CA
// certificates as roots. now is the clock (nil: time.Now). With no roots it
// refuses every certificate with ErrUnknownCA until SetRoots is called.
func NewVerifier(td identity.TrustDomain, roots []*x509.Certificate, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{td: td, now: now}
	v.SetRoots(roots)
	return v
}

// SetRoots atomically replaces the CA bundle, for example after the
// coordinator published a new one. Verifications in flight finish with the
// bundle they started with. Nil entries are skipped.
func (v *Verifier) SetRoots(roots []*x509.Certificate) {
	rs := &rootSet{pool: x509.NewCertPool()}
	for _, c := range roots {
		if c == nil {
			continue
		}
		rs.certs = append(rs.certs, c)
		rs.pool.AddCert(c)
	}
	v.roots.Store(rs)
}

// Roots returns the current CA bundle. Callers must not modify it.
func (v *Verifier) Roots() []*x509.Certificate {
	if v == nil {
		return nil
	}
	if rs := v.roots.Load(); rs != nil {
		return rs.certs
	}
	return nil
}

// TrustDomain is the trust domain identities must belong to.
func (v *Verifier) TrustDomain() identity.TrustDomain { return v.td }

// Now returns the Verifier's idea of the current time.
func (v *Verifier) Now() time.Time { return v.now() }

// Verify checks a peer's chain, leaf first, and returns its identity.
// usage must be x509.ExtKeyUsageClientAuth (a client connecting to us) or
// x509.ExtKeyUsageServerAuth (a server we connect to). Errors match
// ErrNoCertificate, ErrUnknownCA, ErrExpired, ErrNotYetValid,
// ErrWrongTrustDomain, ErrWrongUsage, ErrBadCertificate or
// identity.ErrBadID; ReasonOf classifies them.
func (v *Verifier) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (identity.ID, error) {
	id, err := v.verify(chain, usage)
	if err != nil {
		return identity.ID{}, fmt.Errorf("verify certificate: %w", err)
	}
	return id, nil
}

func (v *Verifier) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (identity.ID, error) {
	leaf, err := v.verifyChain(chain, usage)
	if err != nil {
		return identity.ID{}, err
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.ID{}, err
	}
	if id.TrustDomain != v.td {
		return identity.ID{}, fmt.Errorf("%w: %s is not in %s", ErrWrongTrustDomain, id, v.td)
	}
	return id, nil
}

// verifyChain checks everything but the identity the leaf names, and
// returns the leaf.
func (v *Verifier) verifyChain(chain []*x509.Certificate, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: no verifier configured", ErrUnknownCA)
	}
	if usage != x509.ExtKeyUsageClientAuth && usage != x509.ExtKeyUsageServerAuth {
		return nil, fmt.Errorf("%w: verifier cannot check usage %v", ErrWrongUsage, usage)
	}
	if len(chain) == 0 || chain[0] == nil {
		return nil, ErrNoCertificate
	}
	if len(chain) > maxChain {
		return nil, fmt.Errorf("%w: chain of %d certificates (at most %d)", ErrBadCertificate, len(chain), maxChain)
	}
	leaf := chain[0]
	if leaf.IsCA {
		return nil, fmt.Errorf("%w: a CA certificate is not a node certificate", ErrBadCertificate)
	}
	rs := v.roots.Load()
	if rs == nil || len(rs.certs) == 0 {
		return nil, fmt.Errorf("%w: no CA bundle", ErrUnknownCA)
	}
	now := v.now()
	opts := x509.VerifyOptions{
		Roots:       rs.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			if c != nil {
				opts.Intermediates.AddCert(c)
			}
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, classify(err, now)
	}
	return leaf, nil
}

// classify maps an x509 verification error to our sentinels, keeping the
// original for the log.
func classify(err error, now time.Time) error {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return fmt.Errorf("%w: %w", ErrUnknownCA, err)
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		switch ci.Reason {
		case x509.Expired:
			// x509 reports both "expired" and "not yet valid" as Expired;
			// tell them apart for the audit trail.
			if ci.Cert != nil && now.Before(ci.Cert.NotBefore) {
				return fmt.Errorf("%w: %w", ErrNotYetValid, err)
			}
			return fmt.Errorf("%w: %w", ErrExpired, err)
		case x509.IncompatibleUsage:
			return fmt.Errorf("%w: %w", ErrWrongUsage, err)
		case x509.CANotAuthorizedForThisName:
			return fmt.Errorf("%w: the CA may not issue this name: %w", ErrWrongTrustDomain, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrBadCertificate, err)
}
