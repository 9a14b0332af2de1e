package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// PeerInfo describes a peer whose certificate has been verified.
type PeerInfo struct {
	// ID is the peer's identity.
	ID identity.ID
	// Incarnation is the node registration the certificate was issued for;
	// compare it with the registry to catch revoked nodes.
	Incarnation string
	// NotAfter is when the peer's certificate expires.
	NotAfter time.Time
	// Remote is the peer's network address, "" when unknown.
	Remote string
	// Leaf is the peer's certificate. Callers must not modify it.
	Leaf *x509.Certificate
}

// ServerOptions configure NewServerTLS.
type ServerOptions struct {
	// Certificate returns the certificate to present, read at every
	// handshake so that a renewed certificate is used at once. Nil, or a
	// nil result, fails the handshake.
	Certificate func() *tls.Certificate
	// Verifier checks client certificates. A nil Verifier refuses every
	// client.
	Verifier *Verifier
	// OnPeer, if set, is called during the handshake when a client's
	// certificate has verified. It runs before the client has proved that
	// it holds the certificate's key (TLS 1.3 checks that afterwards), so it
	// must not be recorded as an accepted connection: audit accepted
	// connections after the handshake returns, with PeerOf.
	OnPeer func(PeerInfo)
	// OnRefused, if set, is called for every handshake refused by our
	// checks: no certificate, a certificate that does not verify, or a
	// client without TLS 1.3. remote is the client's address. It is called
	// on the handshake's goroutine and should not block.
	OnRefused func(remote string, why reason.Code, err error)
	// NextProtos are the ALPN protocols offered; nil means h2 and
	// http/1.1. They are fixed here because the configuration used for a
	// connection is derived from this one, so protocols that a server (such
	// as net/http) adds to a copy of the returned config are not seen.
	NextProtos []string
}

// ServerTLS returns a TLS 1.3 server configuration that requires a client
// certificate verified by v and presents cert(). onPeer may be nil; see
// ServerOptions.OnPeer. Use NewServerTLS to also record refusals.
func ServerTLS(cert func() *tls.Certificate, v *Verifier, onPeer func(PeerInfo)) *tls.Config {
	return NewServerTLS(ServerOptions{Certificate: cert, Verifier: v, OnPeer: onPeer})
}

// NewServerTLS returns a TLS 1.3 server configuration for o.
//
// Client certificates are requested rather than required by the TLS stack
// and then required by our own check, so that a client without one is
// refused with a reason the audit trail can record; the outcome is the
// same. Verification uses o.Verifier's clock, never Go's default verifier.
// Session tickets are disabled, so every connection is verified afresh.
func NewServerTLS(o ServerOptions) *tls.Config {
	s := &server{o: o}
	protos := o.NextProtos
	if protos == nil {
		protos = []string{"h2", "http/1.1"}
	}
	base := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		ClientAuth:             tls.RequestClientCert,
		SessionTicketsDisabled: true,
		NextProtos:             protos,
		GetCertificate:         s.certificate,
		// Without GetConfigForClient (a caller cleared it) the remote
		// address is unknown, but the check still runs.
		VerifyConnection: func(cs tls.ConnectionState) error { return s.verify("", cs) },
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := ""
		if hello.Conn != nil && hello.Conn.RemoteAddr() != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		if !slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
			// Record it; the TLS stack then refuses the handshake with a
			// protocol_version alert because of MinVersion.
			s.refused(remote, fmt.Errorf("%w: client offers only older versions", ErrTLSVersion))
			return nil, nil
		}
		c := base.Clone()
		c.VerifyConnection = func(cs tls.ConnectionState) error { return s.verify(remote, cs) }
		return c, nil
	}
	return cfg
}

type server struct{ o ServerOptions }

func (s *server) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.o.Certificate != nil {
		if c := s.o.Certificate(); c != nil {
			return c, nil
		}
	}
	return nil, errors.New("pki: no server certificate available")
}

func (s *server) verify(remote string, cs tls.ConnectionState) error {
	id, err := s.o.Verifier.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
	if err != nil {
		s.refused(remote, err)
		return err
	}
	if s.o.OnPeer != nil {
		s.o.OnPeer(peerInfo(id, remote, cs.PeerCertificates[0]))
	}
	return nil
}

func (s *server) refused(remote string, err error) {
	if s.o.OnRefused != nil {
		s.o.OnRefused(remote, ReasonOf(err), err)
	}
}

func peerInfo(id identity.ID, remote string, leaf *x509.Certificate) PeerInfo {
	return PeerInfo{ID: id, Incarnation: Incarnation(leaf), NotAfter: leaf.NotAfter, Remote: remote, Leaf: leaf}
}

// PeerOf returns the peer of a completed handshake made with a
// configuration from this package (ServerTLS, NewServerTLS, ClientTLS),
// which has already verified the peer's chain; PeerOf does not verify it
// again, so do not use it on connections made with other configurations.
// Remote is left empty.
func PeerOf(cs tls.ConnectionState) (PeerInfo, error) {
	if !cs.HandshakeComplete {
		return PeerInfo{}, errors.New("peer: handshake not complete")
	}
	if len(cs.PeerCertificates) == 0 {
		return PeerInfo{}, fmt.Errorf("peer: %w", ErrNoCertificate)
	}
	leaf := cs.PeerCertificates[0]
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return PeerInfo{}, fmt.Errorf("peer: %w", err)
	}
	return peerInfo(id, "", leaf), nil
}

// ClientTLS returns a TLS 1.3 client configuration that presents cert()
// (no certificate when cert is nil or returns nil), verifies the server's
// chain with v for server authentication, and then asks wantServer whether
// the server's identity is the one the caller meant to reach. A nil
// wantServer refuses every server: any mesh node holds a certificate valid
// for serving, so not checking which one it is would let any node
// impersonate any other. ExpectServer builds the common check.
func ClientTLS(cert func() *tls.Certificate, v *Verifier, wantServer func(identity.ID) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Go's built-in verification is replaced, not skipped:
		// VerifyConnection checks the chain with v's clock and the server's
		// SPIFFE ID instead of the wall clock and a host name.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert != nil {
				if c := cert(); c != nil {
					return c, nil
				}
			}
			return &tls.Certificate{}, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("server certificate refused: %w", err)
			}
			if wantServer == nil {
				return fmt.Errorf("%w: %s: no expected server identity configured", ErrWrongPeer, id)
			}
			if err := wantServer(id); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrWrongPeer, id, err)
			}
			return nil
		},
	}
}

// ExpectServer returns a wantServer check for ClientTLS that accepts only
// the identity want.
func ExpectServer(want identity.ID) func(identity.ID) error {
	return func(got identity.ID) error {
		if want.IsZero() || got != want {
			return fmt.Errorf("want %s", want)
		}
		return nil
	}
}

// PinnedClientTLS returns a TLS 1.3 client configuration for joining: it
// presents no certificate and accepts the server only if the chain it
// presents contains a CA certificate whose SHA-256 fingerprint is
// fingerprint (lowercase hex, as in Fingerprint) and the server's leaf
// verifies against that CA at the current time. Otherwise the handshake
// fails with an error matching ErrFingerprintMismatch, before any
// application data is sent. The server must therefore send the CA
// certificate after its leaf.
func PinnedClientTLS(fingerprint string) *tls.Config {
	return PinnedClientTLSAt(fingerprint, nil)
}

// PinnedClientTLSAt is PinnedClientTLS with a clock (nil: time.Now).
func PinnedClientTLSAt(fingerprint string, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		// Replaced by the pin check in VerifyConnection: the joining node
		// has no CA bundle yet, only the fingerprint from its auth key.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &tls.Certificate{}, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyPinned(cs.PeerCertificates, fingerprint, now()); err != nil {
				return fmt.Errorf("join: %w", err)
			}
			return nil
		},
	}
}

func verifyPinned(chain []*x509.Certificate, fingerprint string, now time.Time) error {
	if !validFingerprint(fingerprint) {
		return fmt.Errorf("%w: pinned fingerprint %q is not 64 lowercase hex digits", ErrFingerprintMismatch, fingerprint)
	}
	if len(chain) == 0 || len(chain) > maxChain {
		return fmt.Errorf("%w: server presented %d certificates", ErrFingerprintMismatch, len(chain))
	}
	var pinned *x509.Certificate
	for _, c := range chain {
		if c != nil && Fingerprint(c) == fingerprint {
			pinned = c
			break
		}
	}
	if pinned == nil {
		return fmt.Errorf("%w: no certificate from the server has SHA-256 %s", ErrFingerprintMismatch, fingerprint)
	}
	if !pinned.IsCA || !pinned.BasicConstraintsValid || pinned == chain[0] {
		return fmt.Errorf("%w: the certificate with the pinned fingerprint is not a CA", ErrFingerprintMismatch)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pinned)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != nil && c != pinned {
			inter.AddCert(c)
		}
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: the server certificate does not verify against the pinned CA: %w", ErrFingerprintMismatch, classify(err, now))
	}
	return nil
}
