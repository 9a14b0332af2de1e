package admission

import (
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// State is everything a gateway enforces, swapped atomically as a whole.
// The zero State denies everything.
type State struct {
	// Policy decides every request; nil denies everything.
	Policy *policy.Policy
	// Shadow is the shadow policy: evaluated next to Policy on each
	// decided request, never enforced; where the two differ the request's
	// audit event carries Shadow's decision. Nil: no shadow, unless
	// ShadowFailed names one that could not be compiled (every shadow
	// decision is then an error).
	Shadow       *policy.Policy
	ShadowFailed string
	// Self is this gateway's node, the destination of every request.
	Self policy.Node
	// SelfID is this gateway's SPIFFE ID, written as the destination of
	// audit events; when zero, Self's selector ("tool:NAME") is written.
	SelfID identity.ID
	// Peers are the active nodes of the netmap, by name. A peer absent
	// from the map is refused.
	Peers map[identity.Name]Peer
	// Revoked are the revoked registrations the netmap lists (by
	// incarnation, the identity each was issued to): a certificate issued
	// for one is refused as revoked, not as unknown, so that the refused
	// node and the operator learn the truth. Nil: none.
	Revoked map[string]identity.ID
	// Stale refuses everybody (stale_netmap): the view this state comes
	// from is older than the mesh lets a gateway act on unconfirmed
	// (netmap.Netmap.Fresh).
	Stale bool
	// Delegations checks the delegations callers present (delegation.go);
	// nil refuses every one.
	Delegations *Delegations
}

// Peer is one node that may connect, as the netmap describes it.
type Peer struct {
	// Node is the peer as the policy sees it (name, kind, tags, and its
	// owner from the netmap as User).
	Node policy.Node
	// ID is the identity its certificate must carry.
	ID identity.ID
	// Incarnation is the registration its certificate must be issued for;
	// a certificate of an earlier incarnation is refused.
	Incarnation string
	// Revoked refuses the peer.
	Revoked bool
}

// NewState turns a node's view of the mesh (its netmap and the policy it
// enforces, and whether the view is stale) into the State its gateways
// enforce, for the gateway self. Only active nodes with an incarnation
// are peers: a service this node may reach comes without one and is not a
// peer that may connect here. Revoked nodes with an incarnation (the
// coordinator lists those revoked within a certificate lifetime) go to
// Revoked. The netmap's nodes
// are typed at decode (a node that does not parse fails the decode), so
// none is dropped here. A nil netmap gives a State with no
// peers.
func NewState(self identity.ID, nm *netmap.Netmap, pol *policy.Policy, stale bool) *State {
	s := &State{Policy: pol, SelfID: self, Peers: map[identity.Name]Peer{},
		Self: policy.Node{Name: self.Name, Kind: self.Kind, Tags: []identity.Tag{}}, Stale: stale}
	if nm == nil {
		return s
	}
	s.Delegations = DelegationsOf(nm)
	for _, nn := range nm.Nodes {
		if nn.Incarnation == "" {
			continue
		}
		if nn.Status == netmap.StatusRevoked {
			if s.Revoked == nil {
				s.Revoked = map[string]identity.ID{}
			}
			s.Revoked[nn.Incarnation] = nn.ID
			continue
		}
		if nn.Status != netmap.StatusActive {
			continue
		}
		pn := nn.PolicyNode()
		if nn.ID == self {
			s.Self = pn
		}
		s.Peers[nn.Name] = Peer{Node: pn, ID: nn.ID, Incarnation: nn.Incarnation}
	}
	return s
}

// Dst is what audit events of s's gateway name as their destination:
// SelfID, else Self's selector, else "" (also for a nil s).
func (s *State) Dst() string {
	if s == nil {
		return ""
	}
	if !s.SelfID.IsZero() {
		return s.SelfID.String()
	}
	if s.Self.Name == "" {
		return ""
	}
	return string(s.Self.Kind) + ":" + string(s.Self.Name)
}

// PolicyVersion is the version of s's policy, "" when s or its policy is
// nil.
func (s *State) PolicyVersion() string {
	if s == nil || s.Policy == nil {
		return ""
	}
	return s.Policy.Version()
}

// Check says why the holder of a certificate for id, issued for
// incarnation inc, may not talk to s's gateway, or "" if it may: the view
// is stale (stale_netmap), the certificate was issued for a registration
// the view lists as revoked, or id is a peer marked revoked (revoked), id
// is not an active peer (unknown_peer), the certificate is of another
// incarnation (stale_incarnation), there is no policy (no_policy) or no grant links
// the peer to Self (no_grant). A nil s has no policy.
func (s *State) Check(id identity.ID, inc string) reason.Code {
	if s == nil {
		return reason.NoPolicy
	}
	if s.Stale {
		return reason.StaleNetmap
	}
	if rid, ok := s.Revoked[inc]; ok && inc != "" && rid == id {
		return reason.Revoked
	}
	p, ok := s.Peers[id.Name]
	if !ok || p.ID != id {
		return reason.UnknownPeer
	}
	if p.Revoked {
		return reason.Revoked
	}
	if inc == "" || p.Incarnation != inc {
		return reason.StaleIncarnation
	}
	if s.Policy == nil {
		return reason.NoPolicy
	}
	if !s.Policy.Links(p.Node, s.Self) {
		return reason.NoGrant
	}
	return ""
}

// CheckCaller says why the Identifier caller c may not talk to s's gateway,
// or "" if it may: as Check, with the caller's own policy when it has one.
func (s *State) CheckCaller(c *Caller) reason.Code {
	if s == nil {
		return reason.NoPolicy
	}
	if s.Stale {
		return reason.StaleNetmap
	}
	if c.Key == "" {
		return reason.UnknownPeer
	}
	pol := s.For(c).Policy
	if pol == nil {
		return reason.NoPolicy
	}
	if !pol.Links(c.Node, s.Self) {
		return reason.NoGrant
	}
	return ""
}

// For is s as the caller c sees it: s itself, or a copy deciding with c's
// own policy when c has one.
func (s *State) For(c *Caller) *State {
	if c == nil || c.Policy == nil {
		return s
	}
	cs := *s
	cs.Policy = c.Policy
	// The shadow is a candidate for the mesh's policy, not the caller's.
	cs.Shadow, cs.ShadowFailed = nil, ""
	return &cs
}
