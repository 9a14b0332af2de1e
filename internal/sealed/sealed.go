// Package sealed encrypts the secrets several coordinators share through
// their database (the CA key, the audit signing key), with a key the
// operator provides and the database never holds, so that a dump of the
// database alone cannot mint certificates or sign audit checkpoints.
//
// A sealed value is AES-256-GCM with a random 96-bit nonce; the secret's
// name is bound as additional data, so a sealed CA key cannot be passed
// off as the audit key. The format is "am1" || nonce || ciphertext.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeySize is the size of a sealing key: 32 bytes (AES-256).
const KeySize = 32

// EnvKey is the environment variable that may hold the key, base64.
const EnvKey = "AGENTMESH_DATABASE_KEY"

const magic = "am1"

// ErrOpen is returned for a value that does not open with the key: the
// wrong key, or a value that was changed.
var ErrOpen = errors.New("sealed: the value does not open with this key (wrong --database-key, or the database was altered)")

// ErrNoKey says that a shared database was given without a key, and how
// to make one.
var ErrNoKey = errors.New("a shared database needs a database key, which seals the CA and audit keys in it: " +
	"make one with 'agentmesh coordinator keygen > db.key' (the same file for every coordinator), " +
	"then pass --database-key db.key or set " + EnvKey)

// Key seals and opens values.
type Key struct {
	aead cipher.AEAD
	fp   string
}

// New makes a Key from 32 bytes.
func New(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("sealed: a database key is %d bytes, this one has %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("agentmesh database key\x00"), raw...))
	return &Key{aead: aead, fp: hex.EncodeToString(sum[:8])}, nil
}

// Fingerprint names the key without revealing it, for logs and errors.
func (k *Key) Fingerprint() string { return k.fp }

// Generate returns a new random key, base64 encoded with a newline, as a
// key file holds it.
func Generate() ([]byte, error) {
	raw := make([]byte, KeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	return []byte(base64.StdEncoding.EncodeToString(raw) + "\n"), nil
}

// Load reads the key from file (base64, mode 0600 or stricter), or when
// file is empty from the environment variable EnvKey. Neither given is an
// error that says how to make one.
func Load(file string) (*Key, error) {
	var text string
	switch {
	case file != "":
		fi, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("database key: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("database key %s is readable by other users (mode %v); run: chmod 600 %s", file, fi.Mode().Perm(), file)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("database key: %w", err)
		}
		text = string(b)
	case os.Getenv(EnvKey) != "":
		text = os.Getenv(EnvKey)
	default:
		return nil, ErrNoKey
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("database key: not base64 (make one with 'agentmesh coordinator keygen')")
	}
	return New(raw)
}

// Seal encrypts value under name.
func (k *Key) Seal(name string, value []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte(magic), nonce...)
	return k.aead.Seal(out, nonce, value, []byte(name)), nil
}

// Open decrypts what Seal made for name.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < len(magic)+ns || string(sealed[:len(magic)]) != magic {
		return nil, fmt.Errorf("sealed %s: %w", name, ErrOpen)
	}
	nonce, ct := sealed[len(magic):len(magic)+ns], sealed[len(magic)+ns:]
	v, err := k.aead.Open(nil, nonce, ct, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("sealed %s: %w", name, ErrOpen)
	}
	return v, nil
}
