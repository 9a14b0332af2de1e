package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// committed is what the netmap is made of, as SQLite holds it: the nodes
// (every active one, and those revoked within one maximum certificate
// lifetime) and the newest policy. The registry loads it once at start
// and changes it on the write path itself, under registry.mu, right after
// each transaction commits, so it follows the commit order and a publish
// never reads the whole registry back from disk (issue 16: that was
// O(nodes) per change, 150-335 ms at 10,000 nodes).
//
// Single writer: only this process writes the registry (the data
// directory's lock, dirlock, keeps other coordinators out; several
// coordinators on one database are issue 17), and every write of a node
// or a policy goes through the registry's methods. A write whose outcome
// is in doubt (its commit failed) marks the set stale, and the next
// publish reloads it from SQLite before it serves anything.
type committed struct {
	td identity.TrustDomain
	// nodes are sorted by nodeOrder; each is as loadNodes reads it (ID
	// set, LastSeen left out: the netmap does not carry it). Their slices
	// (tags, addresses) are never changed in place: a publish shares them.
	nodes  []nodeRow
	policy controlapi.PolicyVersion
	// shadow is the newest shadow version; Document "" when it was
	// cleared or promoted (shadow.go).
	shadow controlapi.PolicyVersion
	// deleg is what netmaps need of delegations (delegation.go).
	deleg delegState
	// seq counts the changes applied; a publish that read seq n includes
	// every change up to n.
	seq   uint64
	stale bool
	// oldestRevoked is the earliest revocation time among nodes, so that
	// a publish looks for revocations that aged out only when there are.
	oldestRevoked time.Time
	// asOf is the time of the last load or snapshot: revocations older
	// than its window have been dropped, and later ones not yet.
	asOf time.Time
}

// nodeOrder is the netmap's order of nodes: by name, then registration
// time, then incarnation, as loadNodes's ORDER BY.
func nodeOrder(a, b nodeRow) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.CreatedAt.UnixNano(), b.CreatedAt.UnixNano()),
		cmp.Compare(a.Incarnation, b.Incarnation))
}

// inNetmap says whether a node belongs in a netmap published at a time
// whose revocation window starts at since: active, or revoked at or after
// since (the WHERE of loadNodes).
func inNetmap(n nodeRow, since time.Time) bool {
	return n.Status == netmap.StatusActive || !n.RevokedAt.IsZero() && n.RevokedAt.UnixNano() >= since.UnixNano()
}

// revocationWindow is where the netmap's revoked nodes start at now: a
// certificate issued before a revocation may still be valid for pki.MaxTTL.
func revocationWindow(now time.Time) time.Time { return now.Add(-pki.MaxTTL) }

// loadNodes reads the nodes a netmap at now holds from SQLite, as the
// committed set keeps them.
func (r *registry) loadNodes(ctx context.Context, td identity.TrustDomain, now time.Time) ([]nodeRow, error) {
	rows, err := r.nodes(ctx, revocationWindow(now))
	if err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i] = netmapRow(td, rows[i])
	}
	// SQLite's BINARY collation and Go's string order agree; sorting
	// again costs little once and makes the order this file's.
	slices.SortFunc(rows, nodeOrder)
	return rows, nil
}

// netmapRow is n as the committed set and the netmap hold it.
func netmapRow(td identity.TrustDomain, n nodeRow) nodeRow {
	n.ID, _ = identity.New(td, n.Kind, n.Name)
	n.LastSeen = time.Time{}
	return n
}

// load (re)reads the committed set from SQLite. r.mu is held.
func (r *registry) load(ctx context.Context, now time.Time) error {
	nodes, err := r.loadNodes(ctx, r.mem.td, now)
	if err != nil {
		return fmt.Errorf("load nodes: %w", err)
	}
	p, err := r.policy(ctx, 0)
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	sh, err := r.shadow(ctx)
	if err != nil {
		return fmt.Errorf("load shadow policy: %w", err)
	}
	if err := r.loadDelegations(ctx, now); err != nil {
		return fmt.Errorf("load delegations: %w", err)
	}
	r.mem.nodes, r.mem.policy, r.mem.shadow, r.mem.stale, r.mem.asOf = nodes, p, sh, false, now
	r.mem.oldestRevoked = time.Time{}
	for _, n := range nodes {
		r.noteRevoked(n)
	}
	r.mem.seq++
	return nil
}

// Open loads the committed set for the mesh td; it is called once, when
// the trust domain is known and before anything is published.
func (r *registry) open(ctx context.Context, td identity.TrustDomain, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mem.td = td
	return r.load(ctx, now)
}

func (r *registry) noteRevoked(n nodeRow) {
	if n.Status != netmap.StatusActive && !n.RevokedAt.IsZero() &&
		(r.mem.oldestRevoked.IsZero() || n.RevokedAt.Before(r.mem.oldestRevoked)) {
		r.mem.oldestRevoked = n.RevokedAt
	}
}

// put applies a committed row to the set: it replaces the row of the same
// registration or inserts it in its place. r.mu is held.
func (r *registry) put(n nodeRow) {
	n = netmapRow(r.mem.td, n)
	i, found := slices.BinarySearchFunc(r.mem.nodes, n, nodeOrder)
	if found {
		r.mem.nodes[i] = n
	} else {
		r.mem.nodes = slices.Insert(r.mem.nodes, i, n)
	}
	r.noteRevoked(n)
	r.mem.seq++
}

// doubt marks the set stale: a write may or may not have committed. r.mu
// is held.
func (r *registry) doubt() {
	r.mem.stale = true
	r.mem.seq++
}

// changes is the count of changes applied so far (see publish).
func (r *registry) changes() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mem.seq
}

// netmapState is what a publish is made of: the nodes in the netmap's
// order, a fresh slice the caller owns; where the active services are in
// it; the newest policy; and the seq it includes.
type netmapState struct {
	nodes    []netmap.Node
	services []int
	policy   controlapi.PolicyVersion
	shadow   controlapi.PolicyVersion
	deleg    delegState
	seq      uint64
}

// snapshot returns the committed set as a netmap at now holds it,
// reloading it from SQLite first if it is stale. Revocations that left
// the window are dropped here, so a publish that nothing else changed
// still ages them out, as reading the registry back did.
func (r *registry) snapshot(ctx context.Context, now time.Time) (netmapState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem.stale {
		if err := r.load(ctx, now); err != nil {
			return netmapState{}, err
		}
	}
	r.mem.asOf = now
	since := revocationWindow(now)
	if !r.mem.oldestRevoked.IsZero() && r.mem.oldestRevoked.UnixNano() < since.UnixNano() {
		r.mem.nodes = slices.DeleteFunc(r.mem.nodes, func(n nodeRow) bool { return !inNetmap(n, since) })
		r.mem.oldestRevoked = time.Time{}
		for _, n := range r.mem.nodes {
			r.noteRevoked(n)
		}
	}
	st := netmapState{nodes: make([]netmap.Node, len(r.mem.nodes)), policy: r.mem.policy, shadow: r.mem.shadow, deleg: r.mem.deleg, seq: r.mem.seq}
	for i := range r.mem.nodes {
		n := &r.mem.nodes[i].Node
		st.nodes[i] = *n
		if n.Status == netmap.StatusActive && n.Kind.Serves() {
			st.services = append(st.services, i)
		}
	}
	return st, nil
}

// refreshNode rereads the node registered under incarnation, which another
// coordinator changed, into the set. The read is made under r.mu, like
// this coordinator's own writes, so that a row read before one of them
// cannot be put after it. A failed read leaves the set stale: the next
// publish reloads it.
func (r *registry) refreshNode(ctx context.Context, incarnation string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	row, err := r.registration(ctx, incarnation)
	if err != nil {
		r.doubt()
		return
	}
	r.put(row)
}

// refreshPolicy rereads the newest policy, which another coordinator
// applied.
func (r *registry) refreshPolicy(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.policy(ctx, 0)
	if err != nil {
		r.doubt()
		return
	}
	if p.Version != r.mem.policy.Version {
		r.mem.policy = p
		r.mem.seq++
	}
}
