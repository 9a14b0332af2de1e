package pki

import (
	"errors"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("no certificate presented")
	// ErrUnknownCA: the certificate does not chain to a CA in the bundle.
	ErrUnknownCA = errors.New("certificate not issued by a trusted CA")
	// ErrExpired: the certificate (or its CA) has expired.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: the certificate is not valid yet.
	ErrNotYetValid = errors.New("certificate not yet valid")
	// ErrWrongTrustDomain: the identity belongs to another mesh.
	ErrWrongTrustDomain = errors.New("wrong trust domain")
	// ErrWrongUsage: the certificate may not be used for this purpose
	// (client or server authentication).
	ErrWrongUsage = errors.New("certificate not valid for this usage")
	// ErrBadCertificate: the certificate is unusable for another reason.
	ErrBadCertificate = errors.New("bad certificate")
	// ErrWrongPeer: the peer is a valid mesh node, but not the one wanted.
	ErrWrongPeer = errors.New("unexpected peer identity")
	// ErrTLSVersion: the peer does not speak TLS 1.3.
	ErrTLSVersion = errors.New("TLS 1.3 required")
	// ErrFingerprintMismatch: the server does not hold a certificate from
	// the pinned CA.
	ErrFingerprintMismatch = errors.New("CA fingerprint mismatch")
	// ErrBadCSR: a certificate request is malformed or its signature does
	// not verify.
	ErrBadCSR = errors.New("bad certificate request")
	// ErrBadTTL: a requested lifetime is outside [MinTTL, MaxTTL].
	ErrBadTTL = errors.New("certificate lifetime out of range")
	// ErrKeyPermissions: a private key file is readable by group or others.
	ErrKeyPermissions = errors.New("private key file has unsafe permissions")
	// ErrExpiredBeforeRenewal: a Renewer could not renew before the
	// certificate expired.
	ErrExpiredBeforeRenewal = errors.New("certificate expired before it could be renewed")
)

// reasons maps sentinels to reasons, most specific first.
var reasons = []struct {
	err  error
	code reason.Code
}{
	{ErrNoCertificate, reason.NoCertificate},
	{ErrUnknownCA, reason.UnknownCA},
	{ErrExpired, reason.Expired},
	{ErrNotYetValid, reason.NotYetValid},
	{ErrWrongTrustDomain, reason.WrongTrustDomain},
	{identity.ErrBadID, reason.BadIdentity},
	{ErrWrongUsage, reason.WrongUsage},
	{ErrWrongPeer, reason.WrongPeer},
	{ErrTLSVersion, reason.TLSVersion},
	{ErrFingerprintMismatch, reason.FingerprintMismatch},
}

// ReasonOf returns the stable reason code for an error from this package's
// verification (for example reason.UnknownCA), ready for an audit event or
// an API error; "" for a nil error. Errors it does not recognise are
// reason.BadCertificate, so that a refusal always carries a reason.
func ReasonOf(err error) reason.Code {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return reason.BadCertificate
}
