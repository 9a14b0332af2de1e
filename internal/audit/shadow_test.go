package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestShadowDecisionIsCanonicalAndChained: a shadow decision is encoded
// after every older field, as encoding/json writes it, round-trips, and
// changes the bytes the chain hashes; an event without one keeps its
// old bytes (TestCanonicalOfExistingEventsIsUnchanged pins those).
func TestShadowDecisionIsCanonicalAndChained(t *testing.T) {
	e := testEvent(1)
	base, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []ShadowDecision{
		{Decision: Deny, Reason: "not_granted", PolicyVersion: "shadow-3"},
		{Decision: Allow, Reason: "granted", Rule: "2", PolicyVersion: "shadow-3"},
		{Decision: ShadowError, Reason: "internal", PolicyVersion: "shadow-<&>"},
	} {
		c := e
		c.Shadow = &s
		got, err := Canonical(&c)
		if err != nil {
			t.Fatal(err)
		}
		if want := referenceCanonical(t, c); !bytes.Equal(got, want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
		if !bytes.HasPrefix(got, base[:len(base)-1]) || !bytes.Contains(got, []byte(`"outcome":"ok","shadow":{"decision":"`+string(s.Decision)+`"`)) {
			t.Fatalf("shadow not appended after the older fields: %s", got)
		}
		dec, err := DecodeEvent(got)
		if err != nil {
			t.Fatal(err)
		}
		if dec.Shadow == nil || *dec.Shadow != s {
			t.Fatalf("decoded shadow %+v, want %+v", dec.Shadow, s)
		}
		if ChainHash(Hash{}, 1, got) == ChainHash(Hash{}, 1, base) {
			t.Fatal("chain hash ignores the shadow decision")
		}
	}
}

func TestValidateRejectsBadShadowDecision(t *testing.T) {
	for name, s := range map[string]ShadowDecision{
		"empty decision":   {},
		"unknown decision": {Decision: "maybe"},
		"long rule":        {Decision: Deny, Rule: strings.Repeat("x", maxFieldLen+1)},
		"bad utf8 reason":  {Decision: Deny, Reason: "\xff"},
	} {
		e := testEvent(1)
		e.Shadow = &s
		if err := e.Validate(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: Validate = %v, want ErrInvalidEvent", name, err)
		}
	}
	// "error" is a shadow decision only.
	e := testEvent(1)
	e.Decision = ShadowError
	if err := e.Validate(); err == nil {
		t.Error("an event's own decision may not be error")
	}
}
