package auditstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/store"
)

// checkpointRow is one stored checkpoint.
type checkpointRow struct {
	id, seq, at int64
	head, sig   []byte
	// receipt is the 1-based position of a receipt given to Verify; 0 for
	// a checkpoint stored in the database.
	receipt int
}

// String names the checkpoint in a Report's problem.
func (c checkpointRow) String() string {
	if c.receipt > 0 {
		return fmt.Sprintf("receipt %d (seq %d)", c.receipt, c.seq)
	}
	return fmt.Sprintf("checkpoint %d", c.id)
}

// Verify recomputes the hash chain in db from its signed starting point
// (the prune point, or the beginning) and checks every checkpoint
// signature with pub. Tampering yields a Report that is not OK and names
// the first broken entry; the error is only for failing to read the
// database. See the package documentation for what cannot be detected.
//
// receipts are signed heads handed out earlier (Store.Receipt), kept
// outside the database by nodes; each is checked like a stored checkpoint,
// so deleting events a receipt covers, together with the stored
// checkpoints that covered them, is detected too.
func Verify(ctx context.Context, db *store.DB, pub ed25519.PublicKey, receipts ...audit.Receipt) (audit.Report, error) {
	if len(pub) != ed25519.PublicKeySize {
		return audit.Report{}, fmt.Errorf("audit: verify: %w", audit.ErrBadKey)
	}
	// One read transaction gives one snapshot: events and checkpoints
	// appended meanwhile are not half seen.
	tx, err := db.BeginSnapshot(ctx)
	if err != nil {
		return audit.Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	defer tx.Rollback()
	rep, err := verifyTx(ctx, tx, pub, receipts)
	if err != nil {
		return audit.Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	return rep, nil
}

// verifyTx runs the steps of Verify in one read transaction. A step that
// finds the trail broken returns a *brokenError, which becomes the
// report's verdict; any other error is a failure to read.
func verifyTx(ctx context.Context, tx *sql.Tx, pub ed25519.PublicKey, receipts []audit.Receipt) (audit.Report, error) {
	v := &verifier{tx: tx, pub: pub, receipts: receipts, rep: audit.Report{Key: audit.KeyFingerprint(pub)}}
	err := v.run(ctx)
	var b *brokenError
	if errors.As(err, &b) {
		v.rep.OK, v.rep.BrokenSeq, v.rep.BrokenID, v.rep.Problem = false, b.seq, b.id, b.problem
		return v.rep, nil
	}
	if err != nil {
		return v.rep, err
	}
	v.rep.OK = true
	return v.rep, nil
}

// brokenError is what a verification step found broken: the first entry
// that failed (an event's seq and id, or a checkpoint's seq) and why.
type brokenError struct {
	seq     int64
	id      string
	problem string
}

func (b *brokenError) Error() string {
	return fmt.Sprintf("audit trail broken at seq %d: %s", b.seq, b.problem)
}

func broken(seq int64, id, format string, args ...any) error {
	return &brokenError{seq: seq, id: id, problem: fmt.Sprintf(format, args...)}
}

// verifier holds what the steps of one verification share.
type verifier struct {
	tx       *sql.Tx
	pub      ed25519.PublicKey
	receipts []audit.Receipt
	rep      audit.Report

	// start is the seq the chain starts after (the prune point's, or 0)
	// and prev the hash it starts from.
	start int64
	prev  audit.Hash
	// ahead are the signed heads (checkpoints and receipts) the chain has
	// yet to reach, in seq order.
	ahead []checkpointRow
	// kept holds, for each seq a receipt's batch names, the hash of the
	// content that row keeps; filled in while the chain is walked.
	kept map[int64]audit.Hash
}

// run is Verify's steps, in order: where the chain starts, the signed
// heads it must reach, the chain itself, and what the receipts' batches
// say each row holds.
func (v *verifier) run(ctx context.Context) error {
	if err := v.startingPoint(ctx); err != nil {
		return err
	}
	stored, err := v.storedCheckpoints(ctx)
	if err != nil {
		return err
	}
	// Receipts are checked first: they are self-contained, and a batch's
	// seqs tell the chain walk which rows' content to hash.
	given, err := v.receiptHeads()
	if err != nil {
		return err
	}
	if err := v.signedHeads(append(stored, given...)); err != nil {
		return err
	}
	if err := v.chain(ctx); err != nil {
		return err
	}
	return v.receiptBatches()
}

// startingPoint reads the signed prune point, if any, and checks its
// signature: the chain starts after it, from its hash.
func (v *verifier) startingPoint(ctx context.Context) error {
	var head, sig []byte
	var before, at int64
	err := v.tx.QueryRowContext(ctx, `SELECT seq, head, before_ns, time_ns, sig FROM audit_prune WHERE id = 1`).
		Scan(&v.start, &head, &before, &at, &sig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return err
	case len(head) != audit.HashSize:
		return broken(v.start, "", "prune point hash is malformed")
	}
	copy(v.prev[:], head)
	if !ed25519.Verify(v.pub, audit.PruneMessage(v.start, v.prev, before), sig) {
		return broken(v.start, "", "prune point signature is invalid")
	}
	v.rep.PrunedThrough, v.rep.SignedThrough = v.start, v.start
	return nil
}

// storedCheckpoints reads the checkpoints stored in the database.
func (v *verifier) storedCheckpoints(ctx context.Context) ([]checkpointRow, error) {
	rows, err := v.tx.QueryContext(ctx, `SELECT id, seq, head, time_ns, sig FROM audit_checkpoints ORDER BY seq, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cps []checkpointRow
	for rows.Next() {
		var c checkpointRow
		if err := rows.Scan(&c.id, &c.seq, &c.head, &c.at, &c.sig); err != nil {
			return nil, err
		}
		cps = append(cps, c)
	}
	return cps, rows.Err()
}

// receiptHeads checks the shape and signature of each receipt given to
// Verify and returns their heads, to be reached like checkpoints. It notes
// the seqs of their batches, whose content the chain walk hashes.
func (v *verifier) receiptHeads() ([]checkpointRow, error) {
	v.kept = map[int64]audit.Hash{}
	var heads []checkpointRow
	for i, r := range v.receipts {
		if err := r.Validate(); err != nil {
			return nil, broken(r.Seq, "", "receipt %d is malformed: %v", i+1, err)
		}
		head, _ := r.HeadHash()
		c := checkpointRow{seq: r.Seq, at: r.Time.UnixNano(), head: head[:], receipt: i + 1}
		if err := r.Check(v.pub); err != nil {
			return nil, broken(c.seq, "", "%v (signed %s) has an invalid signature", c, r.Time.UTC().Format(time.RFC3339))
		}
		seqs, _ := r.BatchSeqs()
		for _, s := range seqs {
			v.kept[s] = audit.Hash{}
		}
		heads = append(heads, c)
	}
	return heads, nil
}

// signedHeads checks the signature of every stored checkpoint, counts the
// signed heads, and keeps those after the starting point for the chain
// walk to reach. One at the starting point must agree with it; one before
// it speaks of pruned events, and its signature is all there is to check.
func (v *verifier) signedHeads(cps []checkpointRow) error {
	slices.SortStableFunc(cps, func(a, b checkpointRow) int { return cmp.Compare(a.seq, b.seq) })
	for _, c := range cps {
		if len(c.head) != audit.HashSize {
			return broken(c.seq, "", "%v has a malformed hash", c)
		}
		h := audit.Hash(c.head)
		if c.receipt > 0 {
			v.rep.Receipts++
			v.rep.ReceiptsThrough = max(v.rep.ReceiptsThrough, c.seq)
		} else {
			if !ed25519.Verify(v.pub, audit.CheckpointMessage(c.seq, h, c.at), c.sig) {
				return broken(c.seq, "", "%v (signed %s) has an invalid signature", c, time.Unix(0, c.at).UTC().Format(time.RFC3339))
			}
			v.rep.Checkpoints++
			v.rep.SignedThrough = max(v.rep.SignedThrough, c.seq)
		}
		switch {
		case c.seq > v.start:
			v.ahead = append(v.ahead, c)
		case c.seq == v.start && h != v.prev:
			return broken(c.seq, "", "%v disagrees with the prune point", c)
		}
	}
	return nil
}

// eventRow is one stored event with the columns queries filter on.
type eventRow struct {
	seq                                                    int64
	id                                                     string
	timeNS                                                 int64
	kind, src, srcSel, dst, dstSel, method, tool, decision string
	body, hash                                             []byte
}

// chain walks the stored events in seq order from the starting point:
// each must follow the last without a gap, hold a canonical event whose
// columns agree with it, and carry the hash that chains it; every signed
// head must be reached with the hash it signed.
func (v *verifier) chain(ctx context.Context) error {
	rows, err := v.tx.QueryContext(ctx, `SELECT seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash
		FROM audit_events ORDER BY seq`)
	if err != nil {
		return err
	}
	defer rows.Close()
	seq := v.start
	for rows.Next() {
		var r eventRow
		if err := rows.Scan(&r.seq, &r.id, &r.timeNS, &r.kind, &r.src, &r.srcSel, &r.dst, &r.dstSel,
			&r.method, &r.tool, &r.decision, &r.body, &r.hash); err != nil {
			return err
		}
		if want := seq + 1; r.seq != want {
			if r.seq > want {
				return broken(want, "", "events %d..%d are missing (next stored event is seq %d, id %s)", want, r.seq-1, r.seq, r.id)
			}
			return broken(r.seq, r.id, "event lies at or before the prune point (seq %d)", v.start)
		}
		e, h, err := checkEventRow(&r, v.prev)
		if err != nil {
			return err
		}
		for len(v.ahead) > 0 && v.ahead[0].seq == r.seq {
			if !bytes.Equal(v.ahead[0].head, h[:]) {
				return broken(r.seq, r.id, "%v disagrees with the chain: events up to seq %d were changed", v.ahead[0], r.seq)
			}
			v.ahead = v.ahead[1:]
		}
		v.count(&e, &r)
		seq, v.prev = r.seq, h
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(v.ahead) > 0 {
		c := v.ahead[0]
		return broken(c.seq, "", "%v covers seq %d but the chain ends at seq %d: signed events were deleted", c, c.seq, seq)
	}
	return nil
}

// checkEventRow checks one stored event against the chain's previous hash
// prev: its body decodes to an event in canonical form, it chains to prev
// with the stored hash, and the filter columns agree with the body. It
// returns the event and its chain hash.
func checkEventRow(r *eventRow, prev audit.Hash) (audit.Event, audit.Hash, error) {
	e, err := audit.DecodeEvent(r.body)
	if err != nil {
		return e, audit.Hash{}, broken(r.seq, r.id, "stored event does not decode: %v", err)
	}
	canon, err := audit.Canonical(&e)
	if err != nil || !bytes.Equal(canon, r.body) {
		return e, audit.Hash{}, broken(r.seq, r.id, "stored event is not in canonical form")
	}
	h := audit.ChainHash(prev, r.seq, r.body)
	if !bytes.Equal(h[:], r.hash) {
		return e, h, broken(r.seq, r.id, "hash mismatch: the event, its seq or an earlier event was changed, inserted or removed")
	}
	switch {
	case e.ID != r.id:
		return e, h, broken(r.seq, r.id, "id column disagrees with the hashed event (%s)", e.ID)
	case e.Time.UnixNano() != r.timeNS:
		return e, h, broken(r.seq, r.id, "time column disagrees with the hashed event")
	case string(e.Kind) != r.kind, e.Src != r.src, e.Dst != r.dst, e.Method != r.method,
		e.Tool != r.tool, string(e.Decision) != r.decision, selectorOf(e.Src) != r.srcSel, selectorOf(e.Dst) != r.dstSel:
		return e, h, broken(r.seq, r.id, "a filter column disagrees with the hashed event")
	}
	return e, h, nil
}

// count adds the verified event e (stored as r) to the report, and notes
// the content it keeps when a receipt's batch names its seq.
func (v *verifier) count(e *audit.Event, r *eventRow) {
	if e.Kind == audit.KindIntegrity && e.Reason == audit.ReasonIDConflict {
		if v.rep.Conflicts < audit.MaxConflictIDs {
			v.rep.ConflictIDs = append(v.rep.ConflictIDs, e.Target)
		}
		v.rep.Conflicts++
	}
	if _, ok := v.kept[r.seq]; ok {
		v.kept[r.seq] = keptContentHash(e, r.body)
	}
	if v.rep.Events == 0 {
		v.rep.FirstSeq = r.seq
	}
	v.rep.Events++
	v.rep.LastSeq = r.seq
}

// receiptBatches checks each receipt's batch: the rows at its seqs must
// hold what the sender sent. The chain reaching the receipt's head proves
// the rows were not changed after the coordinator signed; this proves the
// coordinator stored what it was sent.
func (v *verifier) receiptBatches() error {
	for i, r := range v.receipts {
		seqs, _ := r.BatchSeqs()
		if len(seqs) == 0 {
			continue
		}
		if slices.ContainsFunc(seqs, func(s int64) bool { return s <= v.start }) {
			v.rep.ReceiptEventsPruned += int64(len(seqs))
			continue
		}
		hashes := make([]audit.Hash, len(seqs))
		for j, s := range seqs {
			hashes[j] = v.kept[s]
		}
		if !r.Batch.Matches(seqs, hashes) {
			return broken(r.Seq, "", "receipt %d: the stored events of its batch (seq %s) are not the events the sender shipped: one was altered or replaced",
				i+1, rangesString(r.Batch.Seqs))
		}
		v.rep.ReceiptEvents += int64(len(seqs))
	}
	return nil
}

// keptContentHash is the hash of the content the row of e keeps for a
// batch: its own canonical bytes, or for an id_conflict integrity event the
// rejected event it keeps.
func keptContentHash(e *audit.Event, body []byte) audit.Hash {
	if e.Kind == audit.KindIntegrity && e.Reason == audit.ReasonIDConflict {
		var d audit.ConflictDetail
		if json.Unmarshal([]byte(e.Detail), &d) == nil && len(d.Rejected) > 0 {
			return sha256.Sum256(d.Rejected)
		}
	}
	return sha256.Sum256(body)
}

// rangesString prints seq ranges as "1..5, 9".
func rangesString(rs []audit.SeqRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprint(r[0])
		if r[1] != r[0] {
			parts[i] += fmt.Sprintf("..%d", r[1])
		}
	}
	return strings.Join(parts, ", ")
}
