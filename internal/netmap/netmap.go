// Package netmap defines the versioned view of the mesh that the coordinator
// distributes to every running node: the nodes with their kinds, tags, served
// addresses and status, the trust bundle, the audit checkpoint key and the
// current policy document.
//
// A Netmap is a value: the coordinator builds a new one for each change and
// nodes swap the one they hold atomically. Nodes cache the last one in their
// state directory so that they keep enforcing it while the coordinator is
// unreachable.
package netmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
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

// Policy is the policy document in force, as applied by an admin.
type Policy struct {
	Version  int64  `json:"version"`
	Document string `json:"document"`
}

// Netmap is one version of the mesh's shared state.
type Netmap struct {
	Version     int64  `json:"version"`
	TrustDomain string `json:"trust_domain"`
	// CABundle holds the PEM certificates that node certificates chain to.
	CABundle string `json:"ca_bundle"`
	// AuditKey is the PEM public key that signs audit checkpoints.
	AuditKey string `json:"audit_key,omitempty"`
	Nodes    []Node `json:"nodes"`
	Policy   Policy `json:"policy"`
}

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

// Decode parses a netmap strictly: unknown fields are errors.
func Decode(b []byte) (*Netmap, error) {
	var m Netmap
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("netmap: %w", err)
	}
	return &m, nil
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
