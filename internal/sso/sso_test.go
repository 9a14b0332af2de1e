package sso_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/sso/ssotest"
)

func token(t *testing.T, p *ssotest.Provider, person string) string {
	t.Helper()
	var tok string
	err := p.WhileApproving(t, person, func(out *ssotest.CodeWriter) error {
		var err error
		tok, err = sso.DeviceLogin(context.Background(), sso.DeviceOptions{Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.Secret, Out: out})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOIDCVerifyGroupsAndClockSkew(t *testing.T) {
	p := ssotest.Start(t, ssotest.Person{ID: "a", Email: "A.Person@Example.com", Groups: []string{"b", "a", "b"}})
	tok := token(t, p, "a")
	var offset time.Duration
	v, err := sso.New(context.Background(), sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, GroupsClaim: ssotest.GroupsClaim,
		Now: func() time.Time { return time.Now().Add(offset) }})
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(context.Background(), tok)
	if err != nil || got.User != "a.person@example.com" || !slices.Equal(got.Groups, []string{"a", "b"}) {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	// Our clock behind the issuer's by more than the skew: the token
	// seems issued in the future.
	offset = -(sso.DefaultSkew + time.Minute)
	var se *sso.Error
	if _, err := v.Verify(context.Background(), tok); !errors.As(err, &se) || se.Code != reason.SSOClockSkew {
		t.Fatalf("clock behind: %v, want %s", err, reason.SSOClockSkew)
	}
	// Within the skew after expiry: still good; beyond it: expired.
	offset = time.Hour + sso.DefaultSkew/2
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("within the skew after expiry: %v", err)
	}
	offset = time.Hour + sso.DefaultSkew + time.Minute
	if _, err := v.Verify(context.Background(), tok); !errors.As(err, &se) || se.Code != reason.SSOExpired {
		t.Fatalf("expired: %v, want %s", err, reason.SSOExpired)
	}
	if _, err := sso.New(context.Background(), sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, Skew: time.Hour}); err == nil {
		t.Fatal("a skew beyond MaxSkew was accepted")
	}
}

// TestEmailClaimNamesTheAddressForIssuersWithoutEmailVerified: with
// EmailClaim the named claim is the person's address, unverified e-mail
// or not; without it an unverified e-mail names nobody, and "email" itself
// is never trusted unverified.
func TestEmailClaimNamesTheAddressForIssuersWithoutEmailVerified(t *testing.T) {
	p := ssotest.Start(t,
		ssotest.Person{ID: "eve", Email: "eve@mail.example", Unverified: true, Claims: map[string]any{"upn": "Eve@Corp.example"}},
		ssotest.Person{ID: "bob", Email: "bob@example.com"})
	eve, bob := token(t, p, "eve"), token(t, p, "bob")
	verify := func(claim, tok string) (sso.Person, reason.Code) {
		t.Helper()
		v, err := sso.New(context.Background(), sso.Config{Issuer: p.Issuer, ClientID: p.ClientID, EmailClaim: claim})
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(context.Background(), tok)
		var se *sso.Error
		if errors.As(err, &se) {
			return got, se.Code
		}
		if err != nil {
			t.Fatal(err)
		}
		return got, ""
	}
	for _, claim := range []string{"", "email"} {
		if _, code := verify(claim, eve); code != reason.SSONoEmail {
			t.Errorf("claim %q, unverified e-mail: %q, want %s", claim, code, reason.SSONoEmail)
		}
	}
	if got, code := verify("upn", eve); code != "" || got.User != "eve@corp.example" {
		t.Errorf("upn: %+v %q, want eve@corp.example", got, code)
	}
	if _, code := verify("upn", bob); code != reason.SSONoEmail {
		t.Errorf("upn missing: %q, want %s", code, reason.SSONoEmail)
	}
}
