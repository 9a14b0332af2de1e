// Package authkey defines the auth keys that nodes join a mesh with.
//
// A key is one copy-pasteable string that carries everything a new node
// needs: the coordinator's URL, the SHA-256 fingerprint of the mesh CA (so the
// node never trusts the coordinator on first use), the key's public id and
// its secret. The coordinator stores only a hash of the secret.
//
// Format: "amk1_" followed by base64url (no padding) of a JSON object
// {"c": URL, "f": CA fingerprint (64 lower-case hex), "i": id, "s": secret}.
// Parsing is strict: unknown fields, a missing field, a malformed URL or
// fingerprint, or trailing data are errors, so a truncated key fails at once
// with a clear message instead of at the coordinator.
package authkey

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

const prefix = "amk1_"

// ErrMalformed is returned for a key string that cannot be parsed.
var ErrMalformed = errors.New("malformed auth key")

// Key is a parsed auth key. String() re-encodes it; the zero Key is invalid.
type Key struct {
	// CoordinatorURL is the https URL of the coordinator's API.
	CoordinatorURL string
	// CAFingerprint is the lower-case hex SHA-256 of the mesh CA certificate.
	CAFingerprint string
	// ID names the key in listings and revocations; it is not secret.
	ID string
	// Secret is the part only the holder knows.
	Secret string
}

type wire struct {
	C string `json:"c"`
	F string `json:"f"`
	I string `json:"i"`
	S string `json:"s"`
}

// New makes a key with a fresh id and secret.
func New(coordinatorURL, caFingerprint string) (Key, error) {
	k := Key{CoordinatorURL: coordinatorURL, CAFingerprint: caFingerprint, ID: "k" + randHex(6), Secret: randHex(32)}
	if err := k.validate(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// String returns the copy-pasteable form of the key.
func (k Key) String() string {
	b, _ := json.Marshal(wire{C: k.CoordinatorURL, F: k.CAFingerprint, I: k.ID, S: k.Secret})
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Parse parses and validates a key string. Surrounding white space is ignored.
func Parse(s string) (Key, error) {
	s = strings.TrimSpace(s)
	body, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return Key{}, fmt.Errorf("%w: it should start with %q", ErrMalformed, prefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return Key{}, fmt.Errorf("%w: not valid base64url (was it truncated when copied?)", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var w wire
	if err := dec.Decode(&w); err != nil || dec.More() {
		return Key{}, fmt.Errorf("%w: bad contents", ErrMalformed)
	}
	k := Key{CoordinatorURL: w.C, CAFingerprint: w.F, ID: w.I, Secret: w.S}
	if err := k.validate(); err != nil {
		return Key{}, err
	}
	return k, nil
}

func (k Key) validate() error {
	u, err := url.Parse(k.CoordinatorURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%w: coordinator URL %q is not https://HOST:PORT", ErrMalformed, k.CoordinatorURL)
	}
	if !isHex(k.CAFingerprint, 64) {
		return fmt.Errorf("%w: CA fingerprint is not 64 hex digits", ErrMalformed)
	}
	if !ValidID(k.ID) {
		return fmt.Errorf("%w: bad key id", ErrMalformed)
	}
	if !isHex(k.Secret, 64) {
		return fmt.Errorf("%w: bad secret", ErrMalformed)
	}
	return nil
}

// HashSecret returns the hex SHA-256 of a secret, as the coordinator stores
// it. Secrets are 256 random bits, so a fast hash is enough.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares secret with a stored hash in constant time.
func SecretMatches(secret, storedHash string) bool {
	h := HashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(h), []byte(storedHash)) == 1
}

// ValidID reports whether s has the form of a key id.
func ValidID(s string) bool {
	return len(s) >= 2 && len(s) <= 32 && s[0] == 'k' && isHex(s[1:], len(s)-1)
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("authkey: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}
