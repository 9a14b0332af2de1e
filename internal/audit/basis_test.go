package audit

import (
	"bytes"
	"strings"
	"testing"
)

func basisEvent() Event {
	e := testEvent(4)
	e.Basis = &Basis{
		SrcTags: []string{"tag:ops"}, DstTags: []string{},
		Method: "tools/call", Template: true,
		ArgPaths: []string{"amount", "opts.mode"}, Args: `{"amount":12,"opts":{"mode":"<ro>"}}`,
	}
	return e
}

func TestBasisIsCoveredByTheCanonicalEncoding(t *testing.T) {
	e := basisEvent()
	got, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	if want := referenceCanonical(t, e); !bytes.Equal(got, want) {
		t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
	}
	back, err := DecodeEvent(got)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Canonical(&back)
	if err != nil || !bytes.Equal(again, got) {
		t.Fatalf("round trip changed the bytes:\n%s\n%s (%v)", got, again, err)
	}
	// Every field of a Basis changes the chained bytes.
	for _, set := range []func(*Basis){
		func(b *Basis) { b.SrcTags = []string{"tag:admin"} },
		func(b *Basis) { b.DstTags = []string{"tag:x"} },
		func(b *Basis) { b.SrcUser = "alice@example.com" },
		func(b *Basis) { b.Method = "resources/subscribe" },
		func(b *Basis) { b.Template = false },
		func(b *Basis) { b.HTTPMethod = "POST" },
		func(b *Basis) { b.Path = "/v1/chat/completions" },
		func(b *Basis) { b.ArgPaths = []string{"amount"} },
		func(b *Basis) { b.Args = `{"amount":13}` },
		func(b *Basis) { b.Unjudged = BasisArgsOverLimit },
	} {
		c := basisEvent()
		set(c.Basis)
		b, err := Canonical(&c)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(b, got) {
			t.Fatalf("canonical encoding ignores a basis field: %s", b)
		}
		h1, h2 := ChainHash(Hash{}, 1, got), ChainHash(Hash{}, 1, b)
		if h1 == h2 {
			t.Fatal("chain hash ignores a basis field")
		}
	}
}

func TestValidateBoundsTheBasis(t *testing.T) {
	for name, set := range map[string]func(*Basis){
		"nil tags":    func(b *Basis) { b.SrcTags = nil },
		"long args":   func(b *Basis) { b.Args = `{"a":"` + strings.Repeat("x", MaxBasisArgs) + `"}` },
		"many tags":   func(b *Basis) { b.DstTags = make([]string, maxBasisTags+1) },
		"bad utf8":    func(b *Basis) { b.Path = "\xff" },
		"long method": func(b *Basis) { b.Method = strings.Repeat("m", maxFieldLen+1) },
		"long in all": func(b *Basis) {
			for range 60 {
				b.SrcTags = append(b.SrcTags, "tag:"+strings.Repeat("t", 300))
			}
		},
	} {
		e := basisEvent()
		set(e.Basis)
		if err := e.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, e.Basis)
		}
	}
	e := basisEvent()
	if err := e.Validate(); err != nil || e.Basis.Check() != nil {
		t.Fatal(err)
	}
	e.Basis = OverLimit()
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
}
