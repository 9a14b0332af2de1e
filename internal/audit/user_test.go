package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestUserIsCanonicalAndChained: the person behind the caller is encoded
// after every older field (after shadow), as encoding/json writes it,
// round-trips and changes the bytes the chain hashes; an event without
// one keeps its old bytes (TestCanonicalOfExistingEventsIsUnchanged).
func TestUserIsCanonicalAndChained(t *testing.T) {
	e := testEvent(1)
	base, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Event{e, basisEvent()} {
		plain, err := Canonical(&c)
		if err != nil {
			t.Fatal(err)
		}
		c.User = "alice@example.com"
		c.Shadow = &ShadowDecision{Decision: Deny, Reason: "not_granted", PolicyVersion: "shadow-3"}
		got, err := Canonical(&c)
		if err != nil {
			t.Fatal(err)
		}
		if want := referenceCanonical(t, c); !bytes.Equal(got, want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
		if !bytes.HasSuffix(got, []byte(`"policy_version":"shadow-3"},"user":"alice@example.com"}`)) {
			t.Fatalf("user not appended after the older fields: %s", got)
		}
		dec, err := DecodeEvent(got)
		if err != nil || dec.User != c.User {
			t.Fatalf("decoded user %q, %v", dec.User, err)
		}
		c.Shadow = nil
		withUser, _ := Canonical(&c)
		if ChainHash(Hash{}, 1, withUser) == ChainHash(Hash{}, 1, plain) {
			t.Fatal("chain hash ignores the user")
		}
	}
	if e.User != "" || !bytes.Equal(base, mustCanonical(t, e)) {
		t.Fatal("an event without a user changed its bytes")
	}
}

func mustCanonical(t *testing.T, e Event) []byte {
	t.Helper()
	b, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateBoundsTheUser(t *testing.T) {
	for name, u := range map[string]string{"long": strings.Repeat("a", maxFieldLen+1), "bad utf8": "\xff@example.com"} {
		e := testEvent(1)
		e.User = u
		if err := e.Validate(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: Validate = %v, want ErrInvalidEvent", name, err)
		}
	}
}
