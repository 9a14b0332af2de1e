package gateway

import (
	"net/http"

	"agentmesh/internal/identity"
	"agentmesh/internal/pki"
)

// peerInfo is an identified, admitted client.
type peerInfo struct {
	ref   peerRef
	peer  Peer
	state *State
	addr  string
}

// identify finds the peer behind r and admits it under the current state.
// On refusal it returns the reason and the identity if one was read.
func (g *Gateway) identify(r *http.Request) (*peerInfo, identity.ID, string) {
	st := g.state.Load()
	p, id, inc, reason := identifyCert(st, r)
	if reason != "" {
		return nil, id, reason
	}
	return &peerInfo{
		ref:   peerRef{id: id, incarnation: inc},
		peer:  p,
		state: st,
		addr:  r.RemoteAddr,
	}, id, ""
}

// admit says why id (with a certificate of incarnation inc) may not talk to
// this gateway under st, or "" if it may.
func admit(st *State, id identity.ID, inc string) string {
	if st.Stale {
		return ReasonStaleNetmap
	}
	p, ok := st.Peers[id.Name]
	if !ok || p.ID != id {
		return ReasonUnknownPeer
	}
	if p.Revoked {
		return ReasonRevoked
	}
	if inc == "" || p.Incarnation != inc {
		return ReasonStaleCert
	}
	if st.Policy == nil {
		return ReasonNoPolicy
	}
	if !st.Policy.Links(p.Node, st.Self) {
		return ReasonNotLinked
	}
	return ""
}

// identifyCert identifies the client of r by its verified certificate and
// admits it under st. It returns the admitted peer, the identity read from
// the certificate (zero when none could be read), the certificate's
// incarnation and, on refusal, one of the gateway's reason codes
// (no_certificate, bad_identity, unknown_peer, revoked, stale_incarnation,
// no_policy, no_grant); reason is "" when the peer is admitted. A nil st
// refuses with no_policy.
func identifyCert(st *State, r *http.Request) (Peer, identity.ID, string, string) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Peer{}, identity.ID{}, "", ReasonNoCertificate
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return Peer{}, identity.ID{}, "", ReasonBadIdentity
	}
	if st == nil {
		return Peer{}, id, "", ReasonNoPolicy
	}
	inc := pki.Incarnation(leaf)
	if reason := admit(st, id, inc); reason != "" {
		return Peer{}, id, inc, reason
	}
	return st.Peers[id.Name], id, inc, ""
}
