package authkey

import (
	"errors"
	"strings"
	"testing"
)

const fp = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestKeyRoundTrips(t *testing.T) {
	k, err := New("https://127.0.0.1:7443", fp)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("  " + k.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got != k {
		t.Fatalf("Parse(String()) = %+v, want %+v", got, k)
	}
	if !SecretMatches(k.Secret, HashSecret(k.Secret)) || SecretMatches(k.Secret+"0", HashSecret(k.Secret)) {
		t.Fatal("SecretMatches disagrees with HashSecret")
	}
}

func TestParseRejectsMalformedKeys(t *testing.T) {
	k, _ := New("https://127.0.0.1:7443", fp)
	s := k.String()
	cases := map[string]string{
		"empty":       "",
		"no prefix":   strings.TrimPrefix(s, prefix),
		"truncated":   s[:len(s)-7],
		"bad base64":  prefix + "!!!",
		"not json":    prefix + "bm90IGpzb24",
		"http url":    Key{CoordinatorURL: "http://x:1", CAFingerprint: fp, ID: k.ID, Secret: k.Secret}.String(),
		"short fp":    Key{CoordinatorURL: k.CoordinatorURL, CAFingerprint: fp[:10], ID: k.ID, Secret: k.Secret}.String(),
		"upper fp":    Key{CoordinatorURL: k.CoordinatorURL, CAFingerprint: strings.ToUpper(fp), ID: k.ID, Secret: k.Secret}.String(),
		"no secret":   Key{CoordinatorURL: k.CoordinatorURL, CAFingerprint: fp, ID: k.ID}.String(),
		"bad id":      Key{CoordinatorURL: k.CoordinatorURL, CAFingerprint: fp, ID: "x/y", Secret: k.Secret}.String(),
		"url path":    Key{CoordinatorURL: "https://x:1/admin", CAFingerprint: fp, ID: k.ID, Secret: k.Secret}.String(),
		"extra field": prefix + "eyJjIjoiaHR0cHM6Ly94OjEiLCJ4IjoxfQ",
	}
	for name, in := range cases {
		if _, err := Parse(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse error = %v, want ErrMalformed", name, err)
		}
	}
}
