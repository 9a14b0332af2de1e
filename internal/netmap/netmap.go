// Package netmap defines the versioned view of the mesh that the coordinator
// distributes to every running node: the trust bundle, the audit checkpoint
// key, the nodes it needs to know with their kinds, tags, served addresses
// and status, and the rules it enforces.
//
// Need to know: each node gets its own view, built for it on every request.
// A gateway (tool or model node) gets itself, the peers whose connections
// the policy may admit (with the tags and incarnation it checks), and the
// projection of the policy it enforces (policy.Projection: the grants and
// limits whose dst selects it, no tests, no comments). A node gets the
// services it may reach, with their addresses, and never the policy. Admin
// nodes use the admin API instead. Only the version number is shared: it
// changes whenever anything in the mesh does.
//
// A Netmap is a value: the coordinator builds a new one for each change and
// nodes swap the one they hold atomically. Nodes cache the last one in their
// state directory so that they keep enforcing it while the coordinator is
// unreachable, within the limit Fresh sets.
package netmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"agentmesh/internal/identity"
	"agentmesh/internal/policy"
)

// Node status values.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
)

// Node is one registered node.
type Node struct {
	// ID is the node's SPIFFE ID.
	ID   string   `json:"id"`
	Name string   `json:"name"`
	Kind string   `json:"kind"`
	Tags []string `json:"tags"`
	// Addrs are the host:port addresses a serving node is reachable on.
	Addrs  []string `json:"addrs,omitempty"`
	Status string   `json:"status"`
	// Incarnation distinguishes successive nodes that held the same name:
	// it is written into every certificate issued to the node, and a
	// certificate whose incarnation is not the active node's is refused.
	Incarnation string    `json:"incarnation"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
}

// Policy is the policy a gateway enforces: the projection for it of the
// document in force (version 0 when no policy was applied, which denies
// everything), or, without Grants and Limits, a whole document.
type Policy struct {
	Version  int64  `json:"version"`
	Document string `json:"document"`
	// Grants and Limits number a projection's grants and limits as the
	// whole document does (see policy.Projection), so that decisions and
	// rate-limit counters read the same everywhere.
	Grants []int             `json:"grants,omitempty"`
	Limits []policy.LimitRef `json:"limits,omitempty"`
}

// Projected reports whether p is a projection rather than a whole
// document.
func (p Policy) Projected() bool { return p.Grants != nil || p.Limits != nil }

// Netmap is one version of the mesh's state, as one node needs it.
type Netmap struct {
	Version     int64  `json:"version"`
	TrustDomain string `json:"trust_domain"`
	// CABundle holds the PEM certificates that node certificates chain to.
	CABundle string `json:"ca_bundle"`
	// AuditKey is the PEM public key that signs audit checkpoints.
	AuditKey string `json:"audit_key,omitempty"`
	// CertTTL is the lifetime of the mesh's node certificates: how long a
	// view may go without the coordinator confirming it (see Fresh).
	CertTTL time.Duration `json:"cert_ttl,omitempty"`
	// IssuedAt is when the coordinator built this answer, by its clock.
	IssuedAt time.Time `json:"issued_at,omitzero"`
	Nodes    []Node    `json:"nodes"`
	Policy   Policy    `json:"policy"`
}

// Fresh reports whether a view of m that the coordinator last confirmed
// at confirmed (by the node's clock: an answer with a netmap, or a long
// poll's "nothing new") may still admit anybody at now.
//
// The rule: a view not confirmed for longer than one certificate lifetime
// admits nobody, until the coordinator answers again. A gateway that cannot
// hear from the coordinator (it is down, or the gateway restarted from its
// cache while it was) otherwise acts on grants, tags and peers that may
// since have changed. Within the window, a node revoked meanwhile is
// admitted at most until its certificate expires (it can no longer renew),
// the same bound as passive revocation, and a grant removed meanwhile
// holds at most one lifetime past the last confirmation. Past the window
// the gateway fails closed. A view never confirmed, a netmap without a
// lifetime, or a confirmation further in the future than the
// certificates' clock skew allowance (the clock went back) is not fresh.
func (m *Netmap) Fresh(confirmed, now time.Time) bool {
	if m == nil || confirmed.IsZero() || m.CertTTL <= 0 {
		return false
	}
	age := now.Sub(confirmed)
	return age <= m.CertTTL && age >= -clockSkew
}

// clockSkew is how far a confirmation may lie in the future: what
// certificates allow (pki.ClockSkew).
const clockSkew = time.Minute

// Node returns the node named name, if the netmap has it.
func (m *Netmap) Node(name string) (Node, bool) {
	if m == nil {
		return Node{}, false
	}
	for _, n := range m.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Decode parses a netmap strictly: unknown fields are errors, and so is a
// node entry that does not hold together (see Validate), so that nothing
// downstream sees a name its identity does not carry.
func Decode(b []byte) (*Netmap, error) {
	var m Netmap
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("netmap: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks that every node entry holds together: a valid name,
// kind, tags and status, and an ID that is exactly the SPIFFE ID of that
// kind and name in the netmap's trust domain. (encoding/json matches keys
// without regard to case, so a field may arrive under another spelling;
// the entry must still be consistent.)
func (m *Netmap) Validate() error {
	td, err := identity.ParseTrustDomain(m.TrustDomain)
	if err != nil && len(m.Nodes) > 0 {
		return fmt.Errorf("netmap: %w", err)
	}
	for i, n := range m.Nodes {
		kind, err := identity.ParseKind(n.Kind)
		if err != nil {
			return fmt.Errorf("netmap: node %d: %w", i, err)
		}
		name, err := identity.ParseName(n.Name)
		if err != nil {
			return fmt.Errorf("netmap: node %d: %w", i, err)
		}
		id, err := identity.New(td, kind, name)
		if err != nil || n.ID != id.String() {
			return fmt.Errorf("netmap: node %d: id %q is not %s", i, n.ID, id)
		}
		if _, err := identity.ParseTags(n.Tags); err != nil {
			return fmt.Errorf("netmap: node %d: %w", i, err)
		}
		if n.Status != StatusActive && n.Status != StatusRevoked {
			return fmt.Errorf("netmap: node %d: status %q", i, n.Status)
		}
	}
	return nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
