package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/durable"
	"github.com/agentmesh/agentmesh/internal/identity"
)

// Certificate lifetimes.
const (
	// MinTTL is the shortest node certificate lifetime Issue accepts.
	MinTTL = 5 * time.Minute
	// MaxTTL is the longest node certificate lifetime Issue accepts; it
	// bounds how long a stolen key or a revoked node's certificate is useful.
	MaxTTL = 24 * time.Hour
	// DefaultTTL is the lifetime a coordinator uses unless configured.
	DefaultTTL = time.Hour
	// CALifetime is the lifetime of a CA certificate made by NewCA.
	CALifetime = 10 * 365 * 24 * time.Hour
	// ClockSkew is how far NotBefore is backdated, so that a peer whose
	// clock is slightly behind accepts a certificate issued just now.
	ClockSkew = time.Minute
)

// File names of a CA directory.
const (
	CAKeyFile  = "ca.key"
	CACertFile = "ca.crt"
)

// maxIncarnation bounds Subject SerialNumber (X.520 allows 64 characters).
const maxIncarnation = 64

// CA is a mesh certificate authority: an ECDSA key and its self-signed,
// name-constrained certificate. A CA is immutable and safe for concurrent
// use. The zero CA is unusable; make one with NewCA or LoadCA.
type CA struct {
	td   identity.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	fp   string
}

// NewCA creates a CA for trust domain td, valid from now (less ClockSkew)
// for CALifetime. Its certificate permits only URI names in td and cannot
// sign intermediate CAs.
func NewCA(td identity.TrustDomain, now time.Time) (*CA, error) {
	if _, err := identity.ParseTrustDomain(string(td)); err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	if now.IsZero() {
		return nil, errors.New("new CA: zero time")
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"agentmesh"}, CommonName: "agentmesh CA " + string(td)},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		// Critical, so that a verifier that does not understand name
		// constraints refuses the chain rather than ignoring them.
		PermittedDNSDomainsCritical: true,
		PermittedURIDomains:         []string{string(td)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return &CA{td: td, cert: cert, key: key, fp: Fingerprint(cert)}, nil
}

// LoadCA reads ca.key and ca.crt from dir. It refuses a key file that group
// or others may read (ErrKeyPermissions, with the chmod command to run), a
// key that does not match the certificate, and a certificate that is not an
// agentmesh CA. The trust domain is read from the name constraint.
func LoadCA(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, CAKeyFile)
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if err := checkKeyMode(keyPath, fi); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certPath := filepath.Join(dir, CACertFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	return ca, nil
}

// ParseCA makes a CA of a certificate and its key, both PEM, with the
// checks LoadCA makes of its files.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	key, err := DecodeKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	certs, err := DecodeCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%d CA certificates, want 1", len(certs))
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid || len(cert.PermittedURIDomains) != 1 {
		return nil, errors.New("not an agentmesh CA certificate")
	}
	td, err := identity.ParseTrustDomain(cert.PermittedURIDomains[0])
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !samePublicKey(key, cert.PublicKey) {
		return nil, errors.New("the CA key does not match the CA certificate")
	}
	return &CA{td: td, cert: cert, key: key, fp: Fingerprint(cert)}, nil
}

// PEM returns the CA's certificate and key, PEM encoded, as ParseCA reads
// them.
func (ca *CA) PEM() (certPEM, keyPEM []byte, err error) {
	keyPEM, err = EncodeKeyPEM(ca.key)
	if err != nil {
		return nil, nil, err
	}
	return EncodeCertPEM(ca.cert), keyPEM, nil
}

// Save writes ca.key (mode 0600) and ca.crt (mode 0644) into dir, which
// must exist. Each file is written atomically, and an existing file is
// never replaced: overwriting a CA key would cut every node off the mesh.
// The key is written first, so a present ca.crt means a complete CA.
func (ca *CA) Save(dir string) error {
	keyPEM, err := EncodeKeyPEM(ca.key)
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600, false); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dir, CACertFile), EncodeCertPEM(ca.cert), 0o644, false); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// Certificate returns the CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// TrustDomain returns the trust domain the CA issues identities in.
func (ca *CA) TrustDomain() identity.TrustDomain { return ca.td }

// Fingerprint returns the CA certificate's fingerprint (see Fingerprint).
func (ca *CA) Fingerprint() string { return ca.fp }

// Fingerprint returns the lowercase hex SHA-256 of cert's DER, the form in
// which auth keys pin the CA.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// validFingerprint reports whether s is 64 lowercase hex digits.
func validFingerprint(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// IssueRequest says what certificate to issue. Every field but DNSNames and
// IPs is required.
type IssueRequest struct {
	// ID is the identity to certify; it must be in the CA's trust domain.
	ID identity.ID
	// Incarnation identifies this registration of the node. It goes into
	// the Subject SerialNumber, so that a certificate from before a
	// revoke-and-rejoin is told apart from the current one. 1 to 64
	// characters of letters, digits, '-', '_' and '.'.
	Incarnation string
	// TTL is the lifetime, within [MinTTL, MaxTTL].
	TTL time.Duration
	// Now is the issue time from the coordinator's clock.
	Now time.Time
	// DNSNames and IPs are added as SANs for nodes that serve TLS to
	// clients that check host names (the coordinator's admin API).
	DNSNames []string
	IPs      []net.IP
}

// Issue signs a certificate for req.ID over the public key in csr, after
// checking the CSR's signature (proof that the requester holds the key).
//
// The CSR's own subject and SANs are ignored: the coordinator decides the
// identity, the CSR only carries the key. The certificate has exactly one
// URI SAN (req.ID), Subject CommonName = node name, Subject SerialNumber =
// req.Incarnation, NotBefore = Now - ClockSkew, NotAfter = Now + TTL, a
// random 128-bit serial number, ExtKeyUsage client and server auth and
// KeyUsage DigitalSignature. It returns the parsed certificate and its DER.
func (ca *CA) Issue(csr *x509.CertificateRequest, req IssueRequest) (*x509.Certificate, []byte, error) {
	tmpl, err := ca.template(csr, req)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", req.ID, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", req.ID, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", req.ID, err)
	}
	return cert, der, nil
}

func (ca *CA) template(csr *x509.CertificateRequest, req IssueRequest) (*x509.Certificate, error) {
	if csr == nil {
		return nil, fmt.Errorf("%w: none given", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	id, err := identity.New(req.ID.TrustDomain, req.ID.Kind, req.ID.Name)
	if err != nil {
		return nil, err
	}
	if id.TrustDomain != ca.td {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrWrongTrustDomain, id, ca.td)
	}
	return ca.leafTemplate(id.URL(), string(id.Name), req, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth})
}

// leafTemplate is the part of a leaf certificate common to nodes and
// people: the checks of req but its ID, and the template naming uri.
func (ca *CA) leafTemplate(uri *url.URL, cn string, req IssueRequest, usage []x509.ExtKeyUsage) (*x509.Certificate, error) {
	if err := checkIncarnation(req.Incarnation); err != nil {
		return nil, err
	}
	if req.TTL < MinTTL || req.TTL > MaxTTL {
		return nil, fmt.Errorf("%w: %v is outside %v..%v", ErrBadTTL, req.TTL, MinTTL, MaxTTL)
	}
	if req.Now.IsZero() {
		return nil, errors.New("no issue time given")
	}
	notBefore, notAfter := req.Now.Add(-ClockSkew), req.Now.Add(req.TTL)
	if req.Now.Before(ca.cert.NotBefore) || notAfter.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("%w: the CA certificate is valid %v..%v, the certificate would run to %v",
			ErrExpired, ca.cert.NotBefore, ca.cert.NotAfter, notAfter)
	}
	for _, n := range req.DNSNames {
		if n == "" || strings.ContainsAny(n, " /:@*") {
			return nil, fmt.Errorf("invalid DNS name %q", n)
		}
	}
	for _, ip := range req.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, fmt.Errorf("invalid IP address %v", ip)
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, SerialNumber: req.Incarnation},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{uri},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
	}, nil
}

// checkPublicKey accepts the key types TLS 1.3 signs handshakes with and
// that agentmesh nodes use: ECDSA P-256 and P-384, and Ed25519.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: unsupported ECDSA curve %s", ErrBadCSR, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, pub)
	}
}

func checkIncarnation(s string) error {
	if s == "" || len(s) > maxIncarnation {
		return fmt.Errorf("invalid incarnation %q: want 1 to %d characters", s, maxIncarnation)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid incarnation %q: use letters, digits, '-', '_' or '.'", s)
		}
	}
	return nil
}

// Incarnation returns the incarnation recorded in cert by Issue, or "" if
// cert is nil or has none.
func Incarnation(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	return cert.Subject.SerialNumber
}

// randomSerial returns a random, non-zero 128-bit serial number (at most
// 17 DER octets, within RFC 5280's limit of 20).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
