package audit

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestOnBehalfOfIsCanonicalAndChained: the chain of a delegated request is
// encoded after every older field, as encoding/json writes it, round-trips
// and changes the bytes the chain hashes; an event without it keeps its
// old bytes (TestCanonicalOfExistingEventsIsUnchanged pins those).
func TestOnBehalfOfIsCanonicalAndChained(t *testing.T) {
	e := testEvent(1)
	base, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	o := OnBehalfOf{User: "alice@example.com", Chain: []string{"user:alice@example.com", "spiffe://mesh.test/agent/a<&>"}, Delegation: strings.Repeat("ab", 16)}
	for _, withShadow := range []bool{false, true} {
		c := e
		c.OnBehalfOf = &o
		if withShadow {
			c.Shadow = &ShadowDecision{Decision: Deny, Reason: "not_granted", PolicyVersion: "3"}
			c.User = "alice@example.com"
		}
		got, err := Canonical(&c)
		if err != nil {
			t.Fatal(err)
		}
		if want := referenceCanonical(t, c); !bytes.Equal(got, want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
		if !bytes.HasPrefix(got, base[:len(base)-1]) || !bytes.HasSuffix(got, []byte(`,"delegation":"`+o.Delegation+`"}}`)) {
			t.Fatalf("on_behalf_of not appended last: %s", got)
		}
		dec, err := DecodeEvent(got)
		if err != nil {
			t.Fatal(err)
		}
		if dec.OnBehalfOf == nil || dec.OnBehalfOf.User != o.User || !slices.Equal(dec.OnBehalfOf.Chain, o.Chain) || dec.OnBehalfOf.Delegation != o.Delegation {
			t.Fatalf("decoded %+v, want %+v", dec.OnBehalfOf, o)
		}
		if ChainHash(Hash{}, 1, got) == ChainHash(Hash{}, 1, base) {
			t.Fatal("chain hash ignores on_behalf_of")
		}
	}
}

func TestValidateRejectsBadOnBehalfOf(t *testing.T) {
	long := strings.Repeat("x", maxFieldLen+1)
	for name, o := range map[string]OnBehalfOf{
		"no user":       {Chain: []string{"user:a@b.c", "x"}, Delegation: "d"},
		"no delegation": {User: "a@b.c", Chain: []string{"user:a@b.c", "x"}},
		"short chain":   {User: "a@b.c", Chain: []string{"user:a@b.c"}, Delegation: "d"},
		"long chain":    {User: "a@b.c", Chain: make([]string, maxChain+1), Delegation: "d"},
		"long field":    {User: "a@b.c", Chain: []string{"user:a@b.c", long}, Delegation: "d"},
		"invalid utf-8": {User: "a@b.c\xff", Chain: []string{"user:a@b.c", "x"}, Delegation: "d"},
	} {
		e := testEvent(1)
		e.OnBehalfOf = &o
		if err := e.Validate(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}
