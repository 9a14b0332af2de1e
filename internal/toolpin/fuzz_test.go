package toolpin

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzCanonical: what Canonical accepts is valid JSON that means the same
// as its input, and canonicalising it again changes nothing.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1.5e3,"x\n",null,true]}`, `"\ud83d\ude00"`, `-0.0`, `1e-7`, `{"\u00e9":{}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonical(in)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("canonical form %q is not JSON", out)
		}
		again, err := Canonical(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q (%v)", out, again, err)
		}
		var a, b any
		if json.Unmarshal(in, &a) != nil || json.Unmarshal(out, &b) != nil {
			t.Fatal("decode")
		}
		// DeepEqual compares numbers as doubles, where -0 == 0.
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("meaning changed: %q vs %q", in, out)
		}
	})
}
