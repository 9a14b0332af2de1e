package netmap_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

func ownedNetmap(owner string) string {
	return `{"version":9,"trust_domain":"t.mesh","ca_bundle":"","nodes":[` +
		`{"id":"spiffe://t.mesh/agent/laptop","name":"laptop","kind":"agent","tags":[],"status":"active","incarnation":"i1","owner":"` + owner + `"}` +
		`],"policy":{"version":0,"document":""}}`
}

// The owner travels as "owner", becomes the policy's user, and is written
// back byte for byte; a netmap without it (every netmap before owners)
// reads as before (TestNodeKeepsItsWireFormat).
func TestOwnerIsThePolicyUser(t *testing.T) {
	doc := ownedNetmap("alice@example.com")
	nm, err := netmap.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	n := nm.Nodes[0]
	if n.Owner != "alice@example.com" || n.PolicyNode().User != "alice@example.com" {
		t.Fatalf("owner %q, policy user %q", n.Owner, n.PolicyNode().User)
	}
	b, err := json.Marshal(nm.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(doc, string(b)) {
		t.Fatalf("encoded %s, not as on the wire", b)
	}
	if err := nm.Validate(); err != nil {
		t.Fatal(err)
	}
}

// An owner in another spelling, or that is not a user name, fails the
// whole decode: the coordinator writes only the canonical one, and a
// gateway must not match or audit a person under a name the registry
// does not hold.
func TestOwnerMustBeCanonical(t *testing.T) {
	for _, owner := range []string{"Alice@example.com", "alice", "alice@\\u212Aexample.com", "user:alice@example.com"} {
		if _, err := netmap.Decode([]byte(ownedNetmap(owner))); err == nil || !strings.Contains(err.Error(), "owner") {
			t.Errorf("owner %q: Decode = %v, want an owner error", owner, err)
		}
	}
	nm := &netmap.Netmap{TrustDomain: "t.mesh", Nodes: []netmap.Node{{
		ID: identity.ID{TrustDomain: "t.mesh", Kind: identity.KindAgent, Name: "a"}, Name: "a", Kind: identity.KindAgent,
		Tags: []identity.Tag{}, Status: netmap.StatusActive, Owner: "Alice@example.com"}}}
	if err := nm.Validate(); err == nil {
		t.Fatal("Validate accepted an owner not in canonical form")
	}
}
