package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
)

// A statement is a message the CA signs that is not a certificate: a
// delegation, for one (package delegation). Statements are signed with the
// CA key so that every node that trusts the CA can check them without a key
// of their own; key separation comes from the digest: what is signed is
// SHA-256 over "agentmesh statement\x00", the purpose, "\x00" and the
// message. No X.509 structure can begin that way (DER starts with 0x30), a
// statement of one purpose never verifies as another, and only the CA
// signs statements (nodes hold no CA key).

// statementPrefix opens every signed statement's digest input.
const statementPrefix = "agentmesh statement\x00"

// ErrBadStatement: a statement's signature does not verify under any root
// of the bundle, or its purpose is unusable.
var ErrBadStatement = errors.New("statement signature does not verify")

func statementDigest(purpose string, msg []byte) ([]byte, error) {
	if purpose == "" || len(purpose) > 64 {
		return nil, fmt.Errorf("%w: purpose %q", ErrBadStatement, purpose)
	}
	for i := 0; i < len(purpose); i++ {
		if c := purpose[i]; c < 0x21 || c > 0x7e {
			return nil, fmt.Errorf("%w: purpose %q", ErrBadStatement, purpose)
		}
	}
	h := sha256.New()
	h.Write([]byte(statementPrefix))
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write(msg)
	return h.Sum(nil), nil
}

// SignStatement signs msg for purpose (a short printable label, such as
// "delegation/v1") with the CA key; the signature is ASN.1 ECDSA.
func (ca *CA) SignStatement(purpose string, msg []byte) ([]byte, error) {
	d, err := statementDigest(purpose, msg)
	if err != nil {
		return nil, err
	}
	return ecdsa.SignASN1(rand.Reader, ca.key, d)
}

// VerifyStatement reports whether sig is a CA signature over msg for
// purpose under one of roots (the CA bundle, which holds more than one CA
// during a rotation). It checks the signature only: what the statement
// says, and whether it is still valid, is for its package to decide.
func VerifyStatement(roots []*x509.Certificate, purpose string, msg, sig []byte) error {
	d, err := statementDigest(purpose, msg)
	if err != nil {
		return err
	}
	for _, r := range roots {
		if r == nil {
			continue
		}
		pub, ok := r.PublicKey.(*ecdsa.PublicKey)
		if ok && ecdsa.VerifyASN1(pub, d, sig) {
			return nil
		}
	}
	return ErrBadStatement
}
