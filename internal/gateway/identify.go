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
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, identity.ID{}, ReasonNoCertificate
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return nil, identity.ID{}, ReasonBadIdentity
	}
	inc := pki.Incarnation(leaf)
	if reason := admit(st, id, inc); reason != "" {
		return nil, id, reason
	}
	return &peerInfo{
		ref:   peerRef{id: id, incarnation: inc},
		peer:  st.Peers[id.Name],
		state: st,
		addr:  r.RemoteAddr,
	}, id, ""
}

// admit says why id (with a certificate of incarnation inc) may not talk to
// this gateway under st, or "" if it may.
func admit(st *State, id identity.ID, inc string) string {
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
