package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemCSR         = "CERTIFICATE REQUEST"
)

// NewKey returns a fresh ECDSA P-256 private key, the key type of every
// agentmesh node and CA.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// CreateCSR returns the DER of a certificate request signed by key. The
// request carries no names: the coordinator decides the identity, the CSR
// only proves that the node holds key.
func CreateCSR(key crypto.Signer) ([]byte, error) {
	if key == nil {
		return nil, errors.New("create CSR: nil key")
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return der, nil
}

// EncodeCertPEM returns certs as concatenated PEM CERTIFICATE blocks, from
// each certificate's Raw DER. No certificates give an empty result.
func EncodeCertPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		if c == nil {
			continue
		}
		// pem.Encode into a bytes.Buffer cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// DecodeCertsPEM parses every certificate in a PEM bundle. A bundle with no
// certificate, with a block of another type, or with trailing text that is
// not PEM is an error: a CA bundle is never guessed at.
func DecodeCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != pemCertificate {
			return nil, fmt.Errorf("decode certificates: unexpected PEM block %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("decode certificates: %w", err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("decode certificates: trailing data that is not PEM")
	}
	if len(certs) == 0 {
		return nil, errors.New("decode certificates: no CERTIFICATE block found")
	}
	return certs, nil
}

// EncodeCSRPEM wraps the DER of a certificate request in a PEM block.
func EncodeCSRPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
}

// DecodeCSRPEM parses exactly one PEM CERTIFICATE REQUEST and checks its
// signature, which proves that the sender holds the private key.
func DecodeCSRPEM(b []byte) (*x509.CertificateRequest, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != pemCSR || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: want exactly one PEM %s", ErrBadCSR, pemCSR)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	return csr, nil
}

// EncodeKeyPEM returns key as a PEM PKCS#8 PRIVATE KEY block. The result is
// secret: write it with mode 0600 and never log it.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// DecodeKeyPEM parses one PEM PKCS#8 PRIVATE KEY block holding an ECDSA
// key. Error messages never include key material.
func DecodeKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != pemPrivateKey || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("decode key: want exactly one PEM %s block", pemPrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		// The parser's message does not quote the input; keep it for the
		// operator.
		return nil, fmt.Errorf("decode key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("decode key: %T is not an ECDSA key", k)
	}
	return key, nil
}

// samePublicKey reports whether key is the private half of pub.
func samePublicKey(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}
