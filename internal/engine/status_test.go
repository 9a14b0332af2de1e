package engine

import (
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

func TestStatusFindsItsOwnEntryByIncarnation(t *testing.T) {
	id := func(name string) identity.ID {
		id, err := identity.New("agentmesh.local", identity.KindAgent, identity.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	nm := &netmap.Netmap{Nodes: []netmap.Node{
		{ID: id("auditor"), Name: "auditor", Kind: identity.KindAgent, Tags: []identity.Tag{"tag:old"}, Status: netmap.StatusRevoked, Incarnation: "one"},
		{ID: id("auditor"), Name: "auditor", Kind: identity.KindAgent, Tags: []identity.Tag{"tag:new"}, Status: netmap.StatusActive, Incarnation: "two"},
	}}
	for _, inc := range []string{"one", "two"} {
		n, ok := ownEntry(nm, "auditor", inc)
		if !ok || n.Incarnation != inc {
			t.Errorf("ownEntry(%s) = %+v, %v", inc, n, ok)
		}
	}
	if n, ok := ownEntry(nm, "auditor", ""); ok {
		t.Errorf("ownEntry without an incarnation found %+v", n)
	}
}

func TestStatusAssessNamesEveryReasonANodeCannotWork(t *testing.T) {
	ok := NodeStatus{CoordinatorReached: true}
	for _, tc := range []struct {
		name   string
		change func(*NodeStatus)
		want   string // in the one problem, or "" for none
	}{
		{"working", func(*NodeStatus) {}, ""},
		{"away with a fresh cache", func(s *NodeStatus) { s.CoordinatorReached = false }, ""},
		{"expired", func(s *NodeStatus) { s.CertExpired = true }, "certificate expired"},
		{"revoked", func(s *NodeStatus) { s.Revoked = true }, "revoked"},
		{"revoked, whose certificate also expired", func(s *NodeStatus) { s.Revoked, s.CertExpired = true, true }, "revoked"},
		{"away beyond the cache's life", func(s *NodeStatus) { s.CoordinatorReached, s.NetmapStale = false, true }, "unreachable"},
	} {
		st := ok
		tc.change(&st)
		st.assess()
		if tc.want == "" {
			if !st.OK || len(st.Problems) != 0 {
				t.Errorf("%s: %+v, want OK", tc.name, st)
			}
			continue
		}
		if st.OK || len(st.Problems) != 1 || !strings.Contains(st.Problems[0], tc.want) {
			t.Errorf("%s: OK %v, problems %q, want one that says %q", tc.name, st.OK, st.Problems, tc.want)
		}
	}
}
