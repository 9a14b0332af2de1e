package delegation

import (
	"crypto/x509"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
)

var t0 = time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)

type fixture struct {
	ca    *pki.CA
	roots []*x509.Certificate
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	ca, err := pki.NewCA("example.mesh", t0)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{ca: ca, roots: []*x509.Certificate{ca.Certificate()}}
}

func agent(name string) identity.ID {
	return identity.ID{TrustDomain: "example.mesh", Kind: identity.KindAgent, Name: identity.Name(name)}
}

// claims is Alice's delegation to agent "assistant", and when sub is true
// the assistant's on to "helper".
func claims(sub bool) *Claims {
	c := &Claims{V: 1, TrustDomain: "example.mesh", User: "alice@example.com",
		Chain:       []Link{{ID: strings.Repeat("a", 32), By: "user:alice@example.com", To: agent("assistant").String()}},
		Incarnation: "inc-1", Tools: []string{"ledger/transfer", "ledger/get_*"},
		IssuedAt: t0.Unix(), Expires: t0.Add(time.Hour).Unix()}
	if sub {
		c.Chain = append(c.Chain, Link{ID: strings.Repeat("b", 32), By: agent("assistant").String(), To: agent("helper").String()})
	}
	return c
}

func opts(f fixture, peer identity.ID) VerifyOptions {
	return VerifyOptions{Roots: f.roots, TrustDomain: "example.mesh", Peer: peer, Incarnation: "inc-1", Now: t0.Add(time.Minute)}
}

func TestADelegationVerifiesOnlyForTheAgentItWasIssuedTo(t *testing.T) {
	f := newFixture(t)
	tok, err := Sign(f.ca, claims(false))
	if err != nil {
		t.Fatal(err)
	}
	c, why, err := Verify(tok, opts(f, agent("assistant")))
	if why != "" || err != nil {
		t.Fatalf("Verify: %s %v", why, err)
	}
	if c.User != "alice@example.com" || c.ID() != strings.Repeat("a", 32) || c.Depth() != 1 {
		t.Fatalf("claims %+v", c)
	}
	if got := strings.Join(c.Parties(), " "); got != "user:alice@example.com spiffe://example.mesh/agent/assistant" {
		t.Fatalf("Parties %q", got)
	}

	other := opts(f, agent("intruder"))
	if _, why, _ := Verify(tok, other); why != reason.DelegationWrongAgent {
		t.Errorf("another agent: %q, want delegation_wrong_agent", why)
	}
	rejoined := opts(f, agent("assistant"))
	rejoined.Incarnation = "inc-2"
	if _, why, _ := Verify(tok, rejoined); why != reason.DelegationWrongAgent {
		t.Errorf("another incarnation: %q, want delegation_wrong_agent", why)
	}
	if _, why, _ := Verify(tok, opts(f, identity.ID{})); why != reason.DelegationWrongAgent {
		t.Errorf("no peer: %q, want delegation_wrong_agent", why)
	}
}

func TestEveryRefusalHasItsReason(t *testing.T) {
	f := newFixture(t)
	tok, err := Sign(f.ca, claims(true))
	if err != nil {
		t.Fatal(err)
	}
	helper := agent("helper")
	if c, why, err := Verify(tok, opts(f, helper)); why != "" || c.Depth() != 2 {
		t.Fatalf("sub-delegation: %q %v", why, err)
	}
	other := newFixture(t)
	foreign, err := pki.NewCA("other.mesh", t0)
	if err != nil {
		t.Fatal(err)
	}
	foreignClaims := claims(false)
	foreignClaims.TrustDomain = "other.mesh"
	foreignClaims.Chain[0].To = "spiffe://other.mesh/agent/assistant"
	foreignTok, err := Sign(foreign, foreignClaims)
	if err != nil {
		t.Fatal(err)
	}
	payload, sig, _ := strings.Cut(strings.TrimPrefix(tok, tokenPrefix), ".")
	for name, tc := range map[string]struct {
		tok  string
		o    func(*VerifyOptions)
		want reason.Code
	}{
		"signed by another CA": {tok, func(o *VerifyOptions) { o.Roots = other.roots }, reason.DelegationBadSignature},
		"no roots":             {tok, func(o *VerifyOptions) { o.Roots = nil }, reason.DelegationBadSignature},
		"another domain's":     {foreignTok, func(o *VerifyOptions) { o.Roots = append(o.Roots, foreign.Certificate()) }, reason.DelegationForeign},
		"expired":              {tok, func(o *VerifyOptions) { o.Now = t0.Add(time.Hour + 2*time.Minute) }, reason.DelegationExpired},
		"expired within skew":  {tok, func(o *VerifyOptions) { o.Now = t0.Add(time.Hour + 30*time.Second) }, reason.DelegationExpired},
		"from the future":      {tok, func(o *VerifyOptions) { o.Now = t0.Add(-2 * time.Minute) }, reason.DelegationClockSkew},
		"garbage":              {"amd1.%%%.%%%", nil, reason.DelegationMalformed},
		"no prefix":            {strings.TrimPrefix(tok, tokenPrefix), nil, reason.DelegationMalformed},
		"padded":               {tokenPrefix + payload + "=." + sig, nil, reason.DelegationMalformed},
		"swapped parts":        {tokenPrefix + sig + "." + payload, nil, reason.DelegationBadSignature},
		"too long":             {tok + strings.Repeat("A", MaxTokenBytes), nil, reason.DelegationMalformed},
	} {
		o := opts(f, helper)
		if tc.o != nil {
			tc.o(&o)
		}
		_, why, err := Verify(tc.tok, o)
		// Expiry is exclusive of the skew: a delegation past Expires is
		// refused once the skew has passed too.
		if name == "expired within skew" {
			if why != "" {
				t.Errorf("%s: %q (%v), want accepted within the skew", name, why, err)
			}
			continue
		}
		if why != tc.want || !errors.Is(err, ErrInvalid) && !errors.Is(err, pki.ErrBadStatement) {
			t.Errorf("%s: %q (%v), want %q", name, why, err, tc.want)
		}
	}
}

func TestSignRefusesImpossibleChains(t *testing.T) {
	f := newFixture(t)
	for name, mutate := range map[string]func(*Claims){
		"not chained":     func(c *Claims) { c.Chain[1].By = agent("someone").String() },
		"loop":            func(c *Claims) { c.Chain[1].To = c.Chain[0].To },
		"same id":         func(c *Claims) { c.Chain[1].ID = c.Chain[0].ID },
		"tool node":       func(c *Claims) { c.Chain[1].To = "spiffe://example.mesh/tool/helper" },
		"root not user":   func(c *Claims) { c.Chain[0].By = agent("x").String() },
		"upper-case user": func(c *Claims) { c.User = "Alice@example.com"; c.Chain[0].By = "user:Alice@example.com" },
		"too long":        func(c *Claims) { c.Expires = c.IssuedAt + int64(MaxTTL/time.Second) + 1 },
		"too short":       func(c *Claims) { c.Expires = c.IssuedAt + 1 },
		"bad tool":        func(c *Claims) { c.Tools = []string{"ledger"} },
		"no incarnation":  func(c *Claims) { c.Incarnation = "" },
		"too deep": func(c *Claims) {
			for i := 2; i <= MaxDepth; i++ {
				to := agent("sub" + string(rune('a'+i))).String()
				c.Chain = append(c.Chain, Link{ID: strings.Repeat(string(rune('b'+i)), 32), By: c.Chain[i-1].To, To: to})
			}
		},
	} {
		c := claims(true)
		mutate(c)
		if _, err := Sign(f.ca, c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: signed (%v)", name, err)
		}
	}
	c := claims(true)
	for i := 2; i < MaxDepth; i++ {
		c.Chain = append(c.Chain, Link{ID: strings.Repeat(string(rune('c'+i)), 32), By: c.Chain[i-1].To, To: agent("sub" + string(rune('a'+i))).String()})
	}
	if _, err := Sign(f.ca, c); err != nil {
		t.Errorf("a chain of MaxDepth links: %v", err)
	}
}

func TestRevokingALinkOrThePersonRevokesTheDelegation(t *testing.T) {
	c := claims(true)
	var none *Revocations
	if none.Revoked(c) || NewRevocations(nil, nil).Revoked(c) {
		t.Fatal("nothing revoked, yet revoked")
	}
	if !NewRevocations([]string{strings.Repeat("a", 32)}, nil).Revoked(c) {
		t.Error("the person's delegation revoked, the sub-delegation made from it is not")
	}
	if !NewRevocations(nil, []string{"alice@example.com"}).Revoked(c) {
		t.Error("the person revoked, their delegation is not")
	}
	if NewRevocations([]string{strings.Repeat("c", 32)}, []string{"bob@example.com"}).Revoked(c) {
		t.Error("revoked by another delegation or person")
	}
}

// FuzzVerify: whatever a peer presents, Verify does not panic, and accepts
// only what the CA signed.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	tok, err := Sign(fx.ca, claims(false))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("amd1..")
	f.Add(tokenPrefix + "e30.AA")
	f.Fuzz(func(t *testing.T, s string) {
		c, why, err := Verify(s, opts(fx, agent("assistant")))
		if why == "" && (err != nil || c == nil || !reflect.DeepEqual(c, claims(false))) {
			t.Fatalf("accepted %q with claims the CA did not sign: %+v (err %v)", s, c, err)
		}
		if why != "" && (c != nil || err == nil) {
			t.Fatalf("refused %q with %q but returned claims or no error", s, why)
		}
	})
}

// BenchmarkVerify is what a gateway pays per delegated request to check
// the token (the signature dominates).
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	tok, err := Sign(f.ca, claims(false))
	if err != nil {
		b.Fatal(err)
	}
	o := opts(f, agent("assistant"))
	b.ReportAllocs()
	for b.Loop() {
		if _, why, err := Verify(tok, o); why != "" {
			b.Fatal(why, err)
		}
	}
}
