package audit

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// MaxBatch is the most events one shipped batch may hold, and so the most
// events a receipt's batch may cover.
const MaxBatch = 10_000

// Receipt is a signed head of the chain handed out of the coordinator: the
// same signed statement as a stored checkpoint (seq, head hash, time), but
// kept by whoever received it. A checkpoint stored in the database can be
// deleted together with the events after it; a receipt on another machine
// cannot, so verifying the trail with receipts (auditstore.Verify) detects
// the deletion of any event a receipt covers.
//
// The coordinator answers every ingested batch with a receipt whose Batch
// commits to the content of that batch as stored: the gateway checks at
// once that what was stored is what it sent (CheckBatch), and verification
// with the receipt later checks that the stored rows still hold exactly
// that.
//
// The file format (JSON, STATE/audit-receipt.json) is this struct. A
// receipt without "batch" is a version 1 receipt (a signed head only,
// written by agentmesh before batches were bound); it is still read and
// checked as a signed head.
type Receipt struct {
	Seq  int64     `json:"seq"`
	Head string    `json:"head"` // hex SHA-256 chain hash at Seq
	Time time.Time `json:"time"` // when it was signed
	// Sig is the base64 Ed25519 signature of the checkpoint message
	// (version 1) or, with Batch, of the receipt message, which also
	// covers Batch.Digest and Batch.Events.
	Sig   string       `json:"sig"`
	Batch *BatchCommit `json:"batch,omitempty"`
}

// BatchCommit binds a receipt to the content of one batch. For each event
// of the batch, in the order it was sent, the coordinator names the seq at
// which its content is kept (a new row, an identical row stored before, or
// the integrity event that keeps a conflicting one); Digest is
//
//	SHA-256("agentmesh audit batch v1\x00" || for each event: uint64be(seq) || SHA-256(canonical))
//
// so it commits to the seqs and to the exact bytes of every event.
type BatchCommit struct {
	// Events is how many events the batch had.
	Events int `json:"events"`
	// Seqs lists the seqs in batch order, compactly: consecutive seqs form
	// one range [first, last].
	Seqs []SeqRange `json:"seqs"`
	// Digest is the hex batch digest.
	Digest string `json:"digest"`
}

// SeqRange is the inclusive range of seqs [first, last].
type SeqRange [2]int64

const (
	batchPrefix   = "agentmesh audit batch v1\x00"
	receiptPrefix = "agentmesh audit receipt v2\x00"
)

// batchDigest computes BatchCommit.Digest.
func batchDigest(seqs []int64, hashes []Hash) Hash {
	h := sha256.New()
	h.Write([]byte(batchPrefix))
	var b [8]byte
	for i, seq := range seqs {
		binary.BigEndian.PutUint64(b[:], uint64(seq))
		h.Write(b[:])
		h.Write(hashes[i][:])
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

// NewBatchCommit builds the commitment to a batch whose events are kept at
// seqs (in batch order) with content hashes hashes (SHA-256 of each kept
// canonical encoding).
func NewBatchCommit(seqs []int64, hashes []Hash) *BatchCommit {
	var ranges []SeqRange
	for _, s := range seqs {
		if n := len(ranges); n > 0 && ranges[n-1][1]+1 == s && s > 0 {
			ranges[n-1][1] = s
			continue
		}
		ranges = append(ranges, SeqRange{s, s})
	}
	d := batchDigest(seqs, hashes)
	return &BatchCommit{Events: len(seqs), Seqs: ranges, Digest: hex.EncodeToString(d[:])}
}

// Matches reports whether b commits to the content hashes kept at seqs:
// the sender's check (CheckBatch, with the hashes of what it sent) and the
// verifier's (with the hashes of what the rows at seqs keep) are this one
// comparison.
func (b *BatchCommit) Matches(seqs []int64, hashes []Hash) bool {
	d := batchDigest(seqs, hashes)
	return b.Digest == hex.EncodeToString(d[:])
}

// seqs expands the ranges, refusing more than MaxBatch seqs, seqs outside
// 1..head and a count other than Events.
func (b *BatchCommit) seqs(head int64) ([]int64, error) {
	if b.Events <= 0 || b.Events > MaxBatch {
		return nil, fmt.Errorf("batch of %d events is outside 1..%d", b.Events, MaxBatch)
	}
	out := make([]int64, 0, b.Events)
	for _, r := range b.Seqs {
		if r[0] < 1 || r[1] < r[0] || r[1] > head {
			return nil, fmt.Errorf("seq range %d..%d is not within 1..%d", r[0], r[1], head)
		}
		if r[1]-r[0] >= int64(b.Events-len(out)) {
			return nil, fmt.Errorf("seq ranges cover more than %d events", b.Events)
		}
		for s := r[0]; s <= r[1]; s++ {
			out = append(out, s)
		}
	}
	if len(out) != b.Events {
		return nil, fmt.Errorf("seq ranges cover %d events, not %d", len(out), b.Events)
	}
	return out, nil
}

// SignReceipt signs a receipt for the chain head (seq, head) at time at,
// bound to batch when it is not nil. The coordinator's store calls it for
// every ingested batch and for a bare signed head.
func SignReceipt(signer crypto.Signer, seq int64, head Hash, at time.Time, batch *BatchCommit) (Receipt, error) {
	r := Receipt{Seq: seq, Head: hex.EncodeToString(head[:]), Time: at.UTC(), Batch: batch}
	msg, err := r.message(head)
	if err != nil {
		return Receipt{}, err
	}
	sig, err := signer.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return Receipt{}, fmt.Errorf("sign: %w", err)
	}
	r.Sig = base64.StdEncoding.EncodeToString(sig)
	return r, nil
}

// message is what r's signature covers.
func (r *Receipt) message(head Hash) ([]byte, error) {
	if r.Batch == nil {
		return CheckpointMessage(r.Seq, head, r.Time.UnixNano()), nil
	}
	d, err := hex.DecodeString(r.Batch.Digest)
	if err != nil || len(d) != HashSize {
		return nil, errors.New("batch digest is not a hex SHA-256 hash")
	}
	b := signedMessage(receiptPrefix, r.Seq, head, r.Time.UnixNano())
	b = append(b, d...)
	return binary.BigEndian.AppendUint64(b, uint64(r.Batch.Events)), nil
}

// IsZero reports whether r is the zero Receipt (no events were stored).
func (r Receipt) IsZero() bool { return r.Seq == 0 && r.Head == "" && r.Sig == "" && r.Batch == nil }

// Check verifies r's signature with pub, without a database.
func (r Receipt) Check(pub ed25519.PublicKey) error {
	head, sig, err := r.decode()
	if err != nil {
		return fmt.Errorf("audit: %w: %v", ErrBadReceipt, err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return ErrBadKey
	}
	msg, err := r.message(head)
	if err != nil {
		return fmt.Errorf("audit: %w: %v", ErrBadReceipt, err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return errors.New("audit: receipt signature is invalid")
	}
	return nil
}

// CheckBatch is the sender's check of the receipt answering events: the
// signature holds, and the receipt binds exactly these events, in this
// order, at the seqs it names, with no other content. Any failure wraps
// ErrNotKept (or is a signature error): the batch must not be
// acknowledged.
func (r Receipt) CheckBatch(pub ed25519.PublicKey, events []Event) error {
	if err := r.Check(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrNotKept, err)
	}
	if r.Batch == nil {
		return fmt.Errorf("%w: the receipt binds no batch", ErrNotKept)
	}
	if r.Batch.Events != len(events) {
		return fmt.Errorf("%w: the receipt covers %d events, %d were sent", ErrNotKept, r.Batch.Events, len(events))
	}
	seqs, err := r.BatchSeqs()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotKept, err)
	}
	hashes := make([]Hash, len(events))
	for i := range events {
		c, err := Canonical(&events[i])
		if err != nil {
			return err
		}
		hashes[i] = sha256.Sum256(c)
	}
	if !r.Batch.Matches(seqs, hashes) {
		return fmt.Errorf("%w: the receipt's batch digest does not match the events sent", ErrNotKept)
	}
	return nil
}

// ParseReceipt decodes a receipt strictly (unknown fields and trailing data
// are errors) and checks its shape: a receipt file or one answered by the
// coordinator. It does not check the signature (Check does).
func ParseReceipt(b []byte) (Receipt, error) {
	var r Receipt
	if err := decodeStrict(b, &r); err != nil {
		return Receipt{}, fmt.Errorf("audit: %w: %w", ErrBadReceipt, err)
	}
	if err := r.Validate(); err != nil {
		return Receipt{}, err
	}
	return r, nil
}

// Validate checks r's shape: a positive seq, a hash, a signature, and a
// batch whose ranges are bounded and consistent.
func (r Receipt) Validate() error {
	if _, _, err := r.decode(); err != nil {
		return fmt.Errorf("audit: %w: %v", ErrBadReceipt, err)
	}
	if r.Batch != nil {
		if _, err := r.message(Hash{}); err != nil {
			return fmt.Errorf("audit: %w: %v", ErrBadReceipt, err)
		}
		if _, err := r.BatchSeqs(); err != nil {
			return fmt.Errorf("audit: %w: %v", ErrBadReceipt, err)
		}
	}
	return nil
}

// BatchSeqs returns the seqs r's batch names, in batch order: nil for a
// receipt without a batch, and an error for ranges that are not bounded
// and consistent with the batch's size and r's head.
func (r Receipt) BatchSeqs() ([]int64, error) {
	if r.Batch == nil {
		return nil, nil
	}
	return r.Batch.seqs(r.Seq)
}

// HeadHash returns the chain hash r signs. It fails for a malformed Head;
// a receipt that passed Validate always has one.
func (r Receipt) HeadHash() (Hash, error) {
	head, _, err := r.decode()
	return head, err
}

// decode checks r's shape and returns its head hash and signature.
func (r Receipt) decode() (Hash, []byte, error) {
	head, err := hex.DecodeString(r.Head)
	if err != nil || len(head) != HashSize {
		return Hash{}, nil, errors.New("head is not a hex SHA-256 hash")
	}
	sig, err := base64.StdEncoding.DecodeString(r.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Hash{}, nil, errors.New("sig is not a base64 Ed25519 signature")
	}
	if r.Seq <= 0 {
		return Hash{}, nil, errors.New("seq must be positive")
	}
	return Hash(head), sig, nil
}
