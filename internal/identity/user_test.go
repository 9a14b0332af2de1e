package identity

import (
	"errors"
	"testing"
)

func TestUserParse(t *testing.T) {
	good := map[string]string{
		"alice@example.com":           "alice@example.com",
		"Alice.Smith@Example.COM":     "alice.smith@example.com",
		"bob+agents@corp.example.org": "bob+agents@corp.example.org",
	}
	for in, want := range good {
		u, err := ParseUser(in)
		if err != nil || string(u) != want {
			t.Errorf("ParseUser(%q) = %q, %v; want %q", in, u, err, want)
		}
	}
	for _, in := range []string{"", "alice", "@example.com", "alice@", "alice@localhost", "a@b@example.com",
		"al ice@example.com", "alice/../x@example.com", "alice%40@example.com", ".alice@example.com", "al..ice@example.com",
		"alice@exa_mple..com", "alice@example.com/extra", "alice?x@example.com",
		// Unicode case mapping must not make another address this one:
		// the Kelvin sign lower-cases to 'k', the dotted capital I to 'i'.
		"alice@\u212Aexample.com", "\u0130ris@example.com"} {
		if _, err := ParseUser(in); !errors.Is(err, ErrBadUser) {
			t.Errorf("ParseUser(%q) = %v, want ErrBadUser", in, err)
		}
	}
}

func TestUserIDIsNotANodeID(t *testing.T) {
	u, _ := ParseUser("alice@example.com")
	id, err := NewUserID("mesh.example", u)
	if err != nil {
		t.Fatal(err)
	}
	s := id.String()
	if s != "spiffe://mesh.example/user/alice@example.com" || id.URL().String() != s {
		t.Fatalf("String %q URL %q", s, id.URL())
	}
	back, err := ParseUserID(s)
	if err != nil || back != id {
		t.Fatalf("ParseUserID(%q) = %v, %v", s, back, err)
	}
	// A user's ID is never a node's, and "user" is no node kind.
	if _, err := Parse(s); err == nil {
		t.Fatalf("Parse accepted the user ID %q as a node ID", s)
	}
	if _, err := ParseKind(KindUser); err == nil {
		t.Fatal("ParseKind accepted user")
	}
	if _, err := ParseUserID("spiffe://mesh.example/agent/alice"); err == nil {
		t.Fatal("ParseUserID accepted a node ID")
	}
	if _, err := ParseUserID("spiffe://mesh.example/user/Alice@example.com"); err == nil {
		t.Fatal("ParseUserID accepted a non-canonical (upper-case) spelling")
	}
	if u.Selector() != "user:alice@example.com" {
		t.Fatalf("Selector %q", u.Selector())
	}
}

func TestLowerLoginFoldsOnlyASCII(t *testing.T) {
	for in, want := range map[string]string{
		"":                    "",
		"alice@example.com":   "alice@example.com",
		"Alice@Example.COM":   "alice@example.com",
		"alice@\u212Aexample": "alice@\u212Aexample",
		"\u00C4lice@github":   "\u00C4lice@github",
		"BOB\u00C4@x.example": "bob\u00C4@x.example",
	} {
		if got := LowerLogin(in); got != want {
			t.Errorf("LowerLogin(%q) = %q, want %q", in, got, want)
		}
	}
}
