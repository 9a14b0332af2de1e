package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// Need to know: every node gets a view of the mesh built for it (see the
// netmap package doc). The coordinator keeps the whole netmap and the
// compiled policy of each version (publish), and builds a node's view from
// them when the node asks: the node itself; for a gateway, the peers the
// policy may admit to it and the projection of the policy it enforces;
// for every node, the services it may reach, with their addresses (none
// while a service is not serving) and nothing else. A gateway also gets the registrations revoked within a
// certificate lifetime (publish keeps those) that the policy links to it,
// as identity, incarnation and status only, so that it refuses their
// still-valid certificates as revoked rather than as unknown; the
// operator and the refused node learn what happened. Other nodes get no
// revoked node.

// viewFor builds the netmap that the node self receives. A gateway's view
// walks the whole mesh (any node may be its peer); any other node's walks
// only the services (meshIndex), so that one change reaching every
// watching agent costs each O(services), not O(nodes).
func (c *Coordinator) viewFor(self netmap.Node) (*netmap.Netmap, error) {
	c.mu.Lock()
	full, pol, shadowPol, deleg := c.current, c.pol, c.shadowPol, c.deleg
	if c.index == nil || c.index.of != full {
		c.index = newMeshIndex(full)
	}
	idx := c.index
	c.mu.Unlock()
	nm := &netmap.Netmap{
		Version:     full.Version,
		TrustDomain: full.TrustDomain,
		CABundle:    full.CABundle,
		AuditKey:    full.AuditKey,
		CertTTL:     c.cfg.CertTTL,
		IssuedAt:    c.now().UTC(),
		Nodes:       []netmap.Node{},
		Policy:      netmap.Policy{Version: full.Policy.Version},
		// Every node may know every coordinator: it is where to turn.
		Coordinators: full.Coordinators,
	}
	me := self.PolicyNode()
	serves := me.Kind.Serves()
	add := func(n *netmap.Node) {
		if n.Status != netmap.StatusActive {
			if serves && n.Status == netmap.StatusRevoked && pol.Links(n.PolicyNode(), me) {
				nm.Nodes = append(nm.Nodes, netmap.Node{ID: n.ID, Name: n.Name, Kind: n.Kind, Tags: []identity.Tag{},
					Status: n.Status, Incarnation: n.Incarnation})
			}
			return
		}
		if n.Incarnation == self.Incarnation {
			nm.Nodes = append(nm.Nodes, *n)
			return
		}
		pn := n.PolicyNode()
		var entry netmap.Node
		include := false
		if serves && pol.Links(pn, me) {
			// A peer, as the gateway checks it: identity, tags,
			// incarnation. Where it serves is none of its business.
			entry, include = *n, true
			entry.Addrs = nil
		}
		if pn.Kind.Serves() && pol.Links(me, pn) {
			// A service this node may reach: where (no address while it
			// is not serving, so that its connector can say so rather
			// than call it unknown), and who answers. Its owner only
			// with a peer's entry: a caller has no need to know it.
			if !include {
				entry = netmap.Node{ID: n.ID, Name: n.Name, Kind: n.Kind, Tags: []identity.Tag{}, Status: n.Status}
			}
			entry.Addrs, include = n.Addrs, true
		}
		if include {
			nm.Nodes = append(nm.Nodes, entry)
		}
	}
	if serves {
		for i := range full.Nodes {
			add(&full.Nodes[i])
		}
	} else {
		// The services, and the node itself in its place among them:
		// the order is the whole netmap's, as for a gateway.
		selfAt := position(full.Nodes, self)
		for _, i := range idx.services {
			if selfAt >= 0 && selfAt < i {
				add(&full.Nodes[selfAt])
				selfAt = -1
			}
			add(&full.Nodes[i])
		}
		if selfAt >= 0 {
			add(&full.Nodes[selfAt])
		}
	}
	if serves && full.Policy.Version > 0 {
		pr, err := c.projections.get(pol, full.Policy.Version, me)
		if err != nil {
			return nil, fmt.Errorf("view for %s: %w", self.Name, err)
		}
		nm.Policy.Document, nm.Policy.Grants, nm.Policy.Limits = string(pr.Document), pr.Grants, pr.Limits
	}
	if serves && full.Shadow != nil {
		pr, err := c.shadowProjections.get(shadowPol, full.Shadow.Version, me)
		if err != nil {
			return nil, fmt.Errorf("view for %s: shadow %w", self.Name, err)
		}
		nm.Shadow = &netmap.Policy{Version: full.Shadow.Version, Document: string(pr.Document), Grants: pr.Grants, Limits: pr.Limits}
	}
	addDelegations(nm, self, deleg, nm.IssuedAt)
	return nm, nil
}

// meshIndex is what views of nodes that do not serve need of one netmap:
// where its active services are. publish makes it with the netmap.
type meshIndex struct {
	of       *netmap.Netmap
	services []int // active tool and model nodes, ascending
}

func newMeshIndex(nm *netmap.Netmap) *meshIndex {
	x := &meshIndex{of: nm}
	for i := range nm.Nodes {
		if n := &nm.Nodes[i]; n.Status == netmap.StatusActive && n.Kind.Serves() {
			x.services = append(x.services, i)
		}
	}
	return x
}

// position is where self's registration is in nodes, which are in the
// netmap's order (by name first), or -1. A name has one active
// registration and at most a few revoked ones, so this is a binary search
// and a short walk, not a map rebuilt for every publish.
func position(nodes []netmap.Node, self netmap.Node) int {
	i, _ := slices.BinarySearchFunc(nodes, self.Name, func(n netmap.Node, name identity.Name) int { return cmp.Compare(n.Name, name) })
	for ; i < len(nodes) && nodes[i].Name == self.Name; i++ {
		if nodes[i].Incarnation == self.Incarnation {
			return i
		}
	}
	return -1
}

// projectionCache keeps each gateway's projection of the current policy
// version, so that a change elsewhere in the mesh (a join, a registered
// address) does not project the policy again for every gateway. It is
// emptied when the version changes.
type projectionCache struct {
	mu      sync.Mutex
	version int64
	byNode  map[string]policy.Projection
}

// get returns the projection of pol (version) for the gateway gw. A nil
// pol (a stored document that does not compile here, which apply
// prevents) projects to an empty policy: nothing allowed.
func (pc *projectionCache) get(pol *policy.Policy, version int64, gw policy.Node) (policy.Projection, error) {
	if pol == nil {
		return policy.Projection{Document: []byte("{}\n")}, nil
	}
	// The owner is part of the key: a grant whose dst is user:EMAIL
	// projects onto the gateways that person owns.
	key := string(gw.Kind) + ":" + string(gw.Name) + " " + strings.Join(identity.TagStrings(gw.Tags), ",") + " " + gw.User
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.version != version || pc.byNode == nil {
		pc.version, pc.byNode = version, make(map[string]policy.Projection)
	}
	if pr, ok := pc.byNode[key]; ok {
		return pr, nil
	}
	pr, err := pol.Project(gw)
	if err != nil {
		return pr, fmt.Errorf("policy version %s: %w", strconv.FormatInt(version, 10), err)
	}
	pc.byNode[key] = pr
	return pr, nil
}
