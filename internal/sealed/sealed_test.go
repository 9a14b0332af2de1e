package sealed

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(t *testing.T) *Key {
	t.Helper()
	k, err := New(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealedValuesOpenOnlyWithTheirKeyAndName(t *testing.T) {
	k := testKey(t)
	box, err := k.Seal("ca", []byte("the CA key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, []byte("the CA key")) {
		t.Fatal("sealed value holds the plaintext")
	}
	if v, err := k.Open("ca", box); err != nil || string(v) != "the CA key" {
		t.Fatalf("open: %q %v", v, err)
	}
	if _, err := k.Open("audit", box); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened under another name: %v", err)
	}
	other, _ := New(bytes.Repeat([]byte{8}, KeySize))
	if _, err := other.Open("ca", box); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened with another key: %v", err)
	}
	box[len(box)-1] ^= 1
	if _, err := k.Open("ca", box); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened an altered value: %v", err)
	}
	if _, err := k.Open("ca", []byte("am")); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened a truncated value: %v", err)
	}
}

func TestLoadReadsAGeneratedKeyFileAndRefusesLooseOnes(t *testing.T) {
	t.Setenv(EnvKey, "")
	dir := t.TempDir()
	text, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "db.key")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvKey, strings.TrimSpace(string(text)))
	fromEnv, err := Load("")
	if err != nil || fromEnv.Fingerprint() != k.Fingerprint() {
		t.Fatalf("key from the environment: %v, %v", fromEnv, err)
	}
	os.Chmod(path, 0o644)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loose key file: %v", err)
	}
	t.Setenv(EnvKey, "")
	if _, err := Load(""); err == nil || !strings.Contains(err.Error(), "keygen") {
		t.Fatalf("no key: %v", err)
	}
	t.Setenv(EnvKey, "c2hvcnQ=")
	if _, err := Load(""); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}
