package admission

import (
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestARememberedTokenIsJudgedAsAFreshOne: the verification a gateway
// remembers for a token is bound to the certificate that presented it,
// and time and revocations are judged again on every use.
func TestARememberedTokenIsJudgedAsAFreshOne(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	ca, err := pki.NewCA("example.mesh", t0)
	if err != nil {
		t.Fatal(err)
	}
	agent := identity.ID{TrustDomain: "example.mesh", Kind: identity.KindAgent, Name: "assistant"}
	other := identity.ID{TrustDomain: "example.mesh", Kind: identity.KindAgent, Name: "intruder"}
	id := strings.Repeat("a", 32)
	tok, err := delegation.Sign(ca, &delegation.Claims{V: 1, TrustDomain: "example.mesh", User: "alice@example.com",
		Chain:       []delegation.Link{{ID: id, By: "user:alice@example.com", To: agent.String()}},
		Incarnation: "inc-1", IssuedAt: t0.Unix(), Expires: t0.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	nm := &netmap.Netmap{TrustDomain: "example.mesh", CABundle: string(pki.EncodeCertPEM(ca.Certificate()))}
	st := &State{Delegations: DelegationsOf(nm)}
	now := t0.Add(time.Minute)
	for i := range 2 { // the second use is served from memory
		if c, why := st.Delegation(tok, agent, "inc-1", now); why != "" || c.ID() != id {
			t.Fatalf("use %d: %q", i, why)
		}
	}
	if _, why := st.Delegation(tok, other, "inc-1", now); why != reason.DelegationWrongAgent {
		t.Errorf("another node presenting a remembered token: %q, want delegation_wrong_agent", why)
	}
	if _, why := st.Delegation(tok, agent, "inc-2", now); why != reason.DelegationWrongAgent {
		t.Errorf("another incarnation presenting a remembered token: %q, want delegation_wrong_agent", why)
	}
	if _, why := st.Delegation(tok, agent, "inc-1", t0.Add(2*time.Hour)); why != reason.DelegationExpired {
		t.Errorf("a remembered token past its expiry: %q, want delegation_expired", why)
	}
	// The next netmap revokes it; its state remembers nothing of the last.
	nm.RevokedDelegations = []string{id}
	st = &State{Delegations: DelegationsOf(nm)}
	if _, why := st.Delegation(tok, agent, "inc-1", now); why != reason.DelegationRevoked {
		t.Errorf("a revoked token: %q, want delegation_revoked", why)
	}
	// A token that was refused is not remembered as accepted.
	bad := tok[:len(tok)-4] + "AAAA"
	for range 2 {
		if _, why := st.Delegation(bad, agent, "inc-1", now); why != reason.DelegationBadSignature && why != reason.DelegationMalformed {
			t.Fatalf("a tampered token: %q", why)
		}
	}
}

// BenchmarkPresentedAgain is a delegated session's second and later
// requests: the token is remembered, only its standing is judged.
func BenchmarkPresentedAgain(b *testing.B) {
	t0 := time.Now()
	ca, err := pki.NewCA("example.mesh", t0)
	if err != nil {
		b.Fatal(err)
	}
	agent := identity.ID{TrustDomain: "example.mesh", Kind: identity.KindAgent, Name: "assistant"}
	tok, err := delegation.Sign(ca, &delegation.Claims{V: 1, TrustDomain: "example.mesh", User: "alice@example.com",
		Chain:       []delegation.Link{{ID: strings.Repeat("a", 32), By: "user:alice@example.com", To: agent.String()}},
		Incarnation: "inc-1", IssuedAt: t0.Unix(), Expires: t0.Add(time.Hour).Unix()})
	if err != nil {
		b.Fatal(err)
	}
	st := &State{Delegations: DelegationsOf(&netmap.Netmap{TrustDomain: "example.mesh", CABundle: string(pki.EncodeCertPEM(ca.Certificate()))})}
	b.ReportAllocs()
	for b.Loop() {
		if _, why := st.Delegation(tok, agent, "inc-1", t0); why != "" {
			b.Fatal(why)
		}
	}
}
