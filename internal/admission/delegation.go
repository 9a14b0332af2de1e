package admission

import (
	"crypto/sha256"
	"crypto/x509"
	"net/http"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Delegations is what a gateway checks the delegations its callers
// present against (package delegation): the CA bundle that signs them,
// the trust domain, the revocations the netmap lists and the clock skew
// allowed. A State without it refuses every delegation.
type Delegations struct {
	Roots       []*x509.Certificate
	TrustDomain identity.TrustDomain
	Revoked     *delegation.Revocations
	// Skew is the clock skew allowed; zero is delegation.DefaultSkew.
	Skew time.Duration

	// verified remembers tokens whose signature, shape and binding
	// delegation.Verify accepted, so that the requests of one delegated
	// session pay for the signature once (DelegationsOf makes it; nil
	// verifies every time).
	verified *verifiedTokens
}

// maxVerified bounds the tokens a Delegations remembers; past it the
// memory starts again empty.
const maxVerified = 4096

// verifiedTokens maps a token and the certificate that presented it
// (hashed) to the claims Verify returned for them.
type verifiedTokens struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*delegation.Claims
}

func verifiedKey(tok string, id identity.ID, inc string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(tok))
	h.Write([]byte{0})
	h.Write([]byte(id.String()))
	h.Write([]byte{0})
	h.Write([]byte(inc))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (v *verifiedTokens) get(k [sha256.Size]byte) *delegation.Claims {
	if v == nil {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[k]
}

func (v *verifiedTokens) put(k [sha256.Size]byte, c *delegation.Claims) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= maxVerified {
		v.m = make(map[[sha256.Size]byte]*delegation.Claims)
	}
	v.m[k] = c
}

// DelegationsOf builds the Delegations of a netmap: its CA bundle, trust
// domain and revocation lists. A netmap whose bundle names no
// certificate gives nil: no delegation can be checked, so none is
// accepted.
func DelegationsOf(nm *netmap.Netmap) *Delegations {
	if nm == nil {
		return nil
	}
	roots, err := pki.DecodeCertsPEM([]byte(nm.CABundle))
	if err != nil || len(roots) == 0 {
		return nil
	}
	return &Delegations{
		Roots: roots, TrustDomain: nm.TrustDomain,
		Revoked:  delegation.NewRevocations(nm.RevokedDelegations, nm.RevokedUsers),
		verified: &verifiedTokens{m: make(map[[sha256.Size]byte]*delegation.Claims)},
	}
}

// Delegation checks tok, a delegation presented by the holder of a
// certificate for id issued for incarnation inc, at now: its signature
// under the mesh CA, its binding to that certificate, its time, and the
// revocations s knows. It returns the claims and "", or nil and the
// reason of the refusal (delegation_revoked for a revoked link or
// person; the chain's other agents are checked by the caller against its
// peers). A State without Delegations refuses every delegation
// (delegation_bad_signature: nothing can verify it).
func (s *State) Delegation(tok string, id identity.ID, inc string, now time.Time) (*delegation.Claims, reason.Code) {
	if s == nil || s.Delegations == nil {
		return nil, reason.DelegationBadSignature
	}
	d := s.Delegations
	// What Verify checks besides the time does not change while the CA
	// bundle stays (a new netmap makes new Delegations), and a token it
	// accepted stays accepted as time passes until it expires, which
	// DelegationStanding checks: a token seen before skips the signature.
	key := verifiedKey(tok, id, inc)
	c := d.verified.get(key)
	if c == nil {
		var why reason.Code
		c, why, _ = delegation.Verify(tok, delegation.VerifyOptions{
			Roots: d.Roots, TrustDomain: d.TrustDomain, Peer: id, Incarnation: inc, Now: now, Skew: d.Skew,
		})
		if why != "" {
			return nil, why
		}
		d.verified.put(key, c)
	}
	if why := s.DelegationStanding(c, now); why != "" {
		return nil, why
	}
	return c, ""
}

// DelegationStanding says why an accepted delegation no longer holds
// under s at now, or "": it expired (beyond the clock skew), the person
// or a link of its chain is revoked, or an agent of its chain other than
// the presenting one is revoked or no longer an active peer
// (delegation_revoked). Gateways ask it again of open sessions on every
// netmap, as they check their peers.
func (s *State) DelegationStanding(c *delegation.Claims, now time.Time) reason.Code {
	if s == nil || s.Delegations == nil {
		return reason.DelegationRevoked
	}
	d := s.Delegations
	skew := d.Skew
	if skew <= 0 {
		skew = delegation.DefaultSkew
	}
	if now.Add(-skew).Unix() >= c.Expires {
		return reason.DelegationExpired
	}
	if d.Revoked.Revoked(c) {
		return reason.DelegationRevoked
	}
	for _, l := range c.Chain[:len(c.Chain)-1] {
		id, err := identity.Parse(l.To)
		if err != nil {
			return reason.DelegationRevoked
		}
		p, ok := s.Peers[id.Name]
		if !ok || p.ID != id || p.Revoked {
			return reason.DelegationRevoked
		}
	}
	return ""
}

// Delegated is a delegation a caller presented, verified: its claims,
// what the policy sees of it and what audit events record of it.
type Delegated struct {
	Claims     *delegation.Claims
	Policy     *policy.Delegation
	OnBehalfOf *audit.OnBehalfOf
}

// Presented reads the delegation the request r of the admitted client a
// presents (the delegation.Header) and checks it under s at now. It
// returns nil and "" when r presents none, the verified delegation and "",
// or nil and the reason of the refusal: more than one header
// (delegation_malformed), a client without a certificate, which nothing
// binds a delegation to (delegation_wrong_agent), or what State.Delegation
// says.
func (s *State) Presented(r *http.Request, a Admitted, now time.Time) (*Delegated, reason.Code) {
	vals := r.Header.Values(delegation.Header)
	switch {
	case len(vals) == 0:
		return nil, ""
	case a.Caller != nil || a.ID.IsZero():
		return nil, reason.DelegationWrongAgent
	case len(vals) != 1:
		return nil, reason.DelegationMalformed
	}
	c, why := s.Delegation(vals[0], a.ID, a.Incarnation, now)
	if why != "" {
		return nil, why
	}
	parties := c.Parties()
	return &Delegated{
		Claims:     c,
		Policy:     &policy.Delegation{User: c.User, Chain: parties, Depth: c.Depth()},
		OnBehalfOf: &audit.OnBehalfOf{User: c.User, Chain: parties, Delegation: c.ID()},
	}, ""
}

// Grantor is the policy's view of the person at the root of d: a node
// only its User names, as a person's own device on a tailnet.
func (d *Delegated) Grantor() policy.Node {
	return policy.Node{Kind: identity.KindAgent, User: d.Claims.User}
}

// Grantors calls f with each party whose rights bound d under s: the
// person (Grantor, with no delegation), then each agent of the chain
// before the caller, as s's peers describe it, with the delegation it
// acts under; f returns false to stop. It reports false when an agent of
// the chain is not an active peer of s.
func (s *State) Grantors(d *Delegated, f func(policy.Node, *policy.Delegation) bool) bool {
	if !f(d.Grantor(), nil) {
		return true
	}
	c := d.Claims
	for i, l := range c.Chain[:len(c.Chain)-1] {
		id, err := identity.Parse(l.To)
		if err != nil {
			return false
		}
		peer, ok := s.Peers[id.Name]
		if !ok || peer.ID != id || peer.Revoked {
			return false
		}
		pd := &policy.Delegation{User: c.User, Chain: d.Policy.Chain[:i+2], Depth: i + 1}
		if !f(peer.Node, pd) {
			return true
		}
	}
	return true
}

// CheckGrantors says why a request the policy allowed the caller of d is
// refused after all, or "": allows (the policy's answer for one grantor
// asking the same) refuses the person or an agent before the caller
// (delegation_exceeds_grantor), or such an agent is gone
// (delegation_revoked).
func (s *State) CheckGrantors(d *Delegated, allows func(policy.Node, *policy.Delegation) bool) reason.Code {
	exceeds := false
	if !s.Grantors(d, func(n policy.Node, pd *policy.Delegation) bool {
		exceeds = !allows(n, pd)
		return !exceeds
	}) {
		return reason.DelegationRevoked
	}
	if exceeds {
		return reason.DelegationExceedsGrantor
	}
	return ""
}
