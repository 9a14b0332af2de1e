package transport

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// ServerIs returns the check of the server a node reached: it must carry
// exactly the SPIFFE ID that want returns at that handshake, and that ID
// must be in the trust domain td. want is asked again at every handshake,
// so that a new connection follows the netmap (a service that moved to
// another node is not reached under its old identity); an error from it
// refuses the server. A zero td, or a nil want, refuses every server. It
// is the wantServer of pki.ClientTLS, which wraps its refusals in
// pki.ErrWrongPeer with the identity reached.
func ServerIs(td identity.TrustDomain, want func() (identity.ID, error)) func(identity.ID) error {
	return func(got identity.ID) error {
		if want == nil {
			return errors.New("no expected server identity")
		}
		w, err := want()
		if err != nil {
			return fmt.Errorf("the server expected is unknown: %w", err)
		}
		if td == "" || w.TrustDomain != td {
			return fmt.Errorf("the server expected (%s) is not in trust domain %q", w, td)
		}
		if w.IsZero() || got != w {
			return fmt.Errorf("want %s", w)
		}
		return nil
	}
}

// ClientTLS returns the TLS configuration of a node that presents cert()
// (read at every handshake, so a renewed certificate is used at once),
// verifies the server's chain with v (the mesh CA, the node's clock), and
// accepts only the server ServerIs(v.TrustDomain(), want) accepts.
func ClientTLS(cert func() *tls.Certificate, v *pki.Verifier, want func() (identity.ID, error)) *tls.Config {
	var td identity.TrustDomain
	if v != nil {
		td = v.TrustDomain()
	}
	return pki.ClientTLS(cert, v, ServerIs(td, want))
}
