package audit

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Receipt is a signed head of the chain handed out of the coordinator: the
// same signed statement as a stored checkpoint (seq, head hash, time), but
// kept by whoever received it. The coordinator answers every ingested
// batch with one, and gateways keep the newest. A checkpoint stored in the
// database can be deleted together with the events after it; a receipt on
// another machine cannot, so Verify given receipts detects the deletion of
// any event a receipt covers.
type Receipt struct {
	Seq  int64     `json:"seq"`
	Head string    `json:"head"` // hex SHA-256 chain hash at Seq
	Time time.Time `json:"time"` // when it was signed
	Sig  string    `json:"sig"`  // base64 Ed25519 signature of the checkpoint message
}

// Receipt signs the store's current head. It stores nothing. A store
// without events yields the zero Receipt.
func (s *Store) Receipt(ctx context.Context) (Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale {
		if err := s.loadHead(ctx); err != nil {
			return Receipt{}, fmt.Errorf("audit: receipt: %w", err)
		}
	}
	if s.seq == 0 {
		return Receipt{}, nil
	}
	at := s.opts.Now().UTC()
	sig, err := s.signer.Sign(rand.Reader, checkpointMessage(s.seq, s.head, at.UnixNano()), crypto.Hash(0))
	if err != nil {
		return Receipt{}, fmt.Errorf("audit: receipt: sign: %w", err)
	}
	return Receipt{Seq: s.seq, Head: hex.EncodeToString(s.head[:]), Time: at, Sig: base64.StdEncoding.EncodeToString(sig)}, nil
}

// IsZero reports whether r is the zero Receipt (no events were stored).
func (r Receipt) IsZero() bool { return r == Receipt{} }

// Check verifies r's signature with pub, without a database.
func (r Receipt) Check(pub ed25519.PublicKey) error {
	c, err := r.row()
	if err != nil {
		return err
	}
	if len(pub) != ed25519.PublicKeySize {
		return ErrBadKey
	}
	if !ed25519.Verify(pub, checkpointMessage(c.seq, padHash(c.head), c.at), c.sig) {
		return errors.New("audit: receipt signature is invalid")
	}
	return nil
}

// row decodes r into the form Verify checks stored checkpoints in.
func (r Receipt) row() (checkpointRow, error) {
	head, err := hex.DecodeString(r.Head)
	if err != nil || len(head) != HashSize {
		return checkpointRow{}, errors.New("head is not a hex SHA-256 hash")
	}
	sig, err := base64.StdEncoding.DecodeString(r.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return checkpointRow{}, errors.New("sig is not a base64 Ed25519 signature")
	}
	if r.Seq <= 0 {
		return checkpointRow{}, errors.New("seq must be positive")
	}
	return checkpointRow{seq: r.Seq, at: r.Time.UnixNano(), head: head, sig: sig}, nil
}
