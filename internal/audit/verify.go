package audit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Report is the outcome of Verify. Its zero value is not OK.
type Report struct {
	// OK is true when the chain and every checkpoint check out.
	OK bool `json:"ok"`
	// Events is how many events were verified, FirstSeq..LastSeq.
	Events   int64 `json:"events"`
	FirstSeq int64 `json:"first_seq,omitempty"`
	LastSeq  int64 `json:"last_seq,omitempty"`
	// Checkpoints is how many signed checkpoints were verified.
	Checkpoints int64 `json:"checkpoints"`
	// Receipts is how many receipts given to Verify were checked.
	Receipts int64 `json:"receipts,omitempty"`
	// PrunedThrough is the seq of the signed prune point the chain starts
	// after (0: nothing was pruned).
	PrunedThrough int64 `json:"pruned_through,omitempty"`
	// SignedThrough is the seq of the newest checkpoint. Events after it
	// are chained but not yet signed: deleting them is not detectable.
	SignedThrough int64 `json:"signed_through"`
	// BrokenSeq and BrokenID name the first entry that failed (the event at
	// that seq, or a checkpoint at that seq); Problem says why.
	BrokenSeq int64  `json:"broken_seq,omitempty"`
	BrokenID  string `json:"broken_id,omitempty"`
	Problem   string `json:"problem,omitempty"`
}

// String is a one-line summary for people.
func (r Report) String() string {
	if !r.OK {
		if r.Problem == "" {
			return "audit trail not verified"
		}
		id := ""
		if r.BrokenID != "" {
			id = " (event " + r.BrokenID + ")"
		}
		return fmt.Sprintf("audit trail BROKEN at seq %d%s: %s", r.BrokenSeq, id, r.Problem)
	}
	s := fmt.Sprintf("audit trail intact: %d events", r.Events)
	if r.Events > 0 {
		s += fmt.Sprintf(" (seq %d..%d)", r.FirstSeq, r.LastSeq)
	}
	s += fmt.Sprintf(", %d checkpoints", r.Checkpoints)
	if r.Receipts > 0 {
		s += fmt.Sprintf(", %d receipts", r.Receipts)
	}
	s += fmt.Sprintf(", signed through seq %d", r.SignedThrough)
	if r.PrunedThrough > 0 {
		s += fmt.Sprintf(", pruned through seq %d", r.PrunedThrough)
	}
	if unsigned := r.LastSeq - r.SignedThrough; r.Events > 0 && unsigned > 0 {
		s += fmt.Sprintf(", %d newest events not yet signed", unsigned)
	}
	return s
}

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
func Verify(ctx context.Context, db *sql.DB, pub ed25519.PublicKey, receipts ...Receipt) (Report, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Report{}, fmt.Errorf("audit: verify: %w", ErrBadKey)
	}
	// One read transaction gives one snapshot: events and checkpoints
	// appended meanwhile are not half seen.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	defer tx.Rollback()
	rep, err := verifyTx(ctx, tx, pub, receipts)
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	return rep, nil
}

func verifyTx(ctx context.Context, tx *sql.Tx, pub ed25519.PublicKey, receipts []Receipt) (Report, error) {
	var rep Report
	fail := func(seq int64, id, format string, args ...any) (Report, error) {
		rep.OK, rep.BrokenSeq, rep.BrokenID, rep.Problem = false, seq, id, fmt.Sprintf(format, args...)
		return rep, nil
	}

	// The starting point.
	var prev Hash
	var start int64
	var pHead, pSig []byte
	var pBefore, pAt int64
	err := tx.QueryRowContext(ctx, `SELECT seq, head, before_ns, time_ns, sig FROM audit_prune WHERE id = 1`).
		Scan(&start, &pHead, &pBefore, &pAt, &pSig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return rep, err
	default:
		if len(pHead) != HashSize {
			return fail(start, "", "prune point hash is malformed")
		}
		copy(prev[:], pHead)
		if !ed25519.Verify(pub, pruneMessage(start, prev, pBefore), pSig) {
			return fail(start, "", "prune point signature is invalid")
		}
		rep.PrunedThrough, rep.SignedThrough = start, start
	}

	// Checkpoints, in seq order, checked as the chain reaches them.
	var cps []checkpointRow
	rows, err := tx.QueryContext(ctx, `SELECT id, seq, head, time_ns, sig FROM audit_checkpoints ORDER BY seq, id`)
	if err != nil {
		return rep, err
	}
	for rows.Next() {
		var c checkpointRow
		if err := rows.Scan(&c.id, &c.seq, &c.head, &c.at, &c.sig); err != nil {
			rows.Close()
			return rep, err
		}
		cps = append(cps, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, err
	}
	for i, r := range receipts {
		c, err := r.row()
		if err != nil {
			return fail(r.Seq, "", "receipt %d is malformed: %v", i+1, err)
		}
		c.receipt = i + 1
		cps = append(cps, c)
	}
	slices.SortStableFunc(cps, func(a, b checkpointRow) int { return cmp.Compare(a.seq, b.seq) })
	ahead := cps[:0] // checkpoints the chain must still reach
	for _, c := range cps {
		if len(c.head) != HashSize {
			return fail(c.seq, "", "%v has a malformed hash", c)
		}
		h := padHash(c.head)
		if !ed25519.Verify(pub, checkpointMessage(c.seq, h, c.at), c.sig) {
			return fail(c.seq, "", "%v (signed %s) has an invalid signature", c, time.Unix(0, c.at).UTC().Format(time.RFC3339))
		}
		if c.receipt > 0 {
			rep.Receipts++
		} else {
			rep.Checkpoints++
		}
		rep.SignedThrough = max(rep.SignedThrough, c.seq)
		switch {
		case c.seq > start:
			ahead = append(ahead, c)
		case c.seq == start && h != prev:
			return fail(c.seq, "", "%v disagrees with the prune point", c)
		}
		// A checkpoint before the prune point speaks of pruned events:
		// its signature is all there is to check.
	}
	cps = ahead

	// The chain.
	rows, err = tx.QueryContext(ctx, `SELECT seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash
		FROM audit_events ORDER BY seq`)
	if err != nil {
		return rep, err
	}
	defer rows.Close()
	seq := start
	for rows.Next() {
		var r struct {
			seq                                                 int64
			id                                                  string
			timeNS                                              int64
			kind, src, srcSel, dst, dstSel, method, tool, decis string
			body, hash                                          []byte
		}
		if err := rows.Scan(&r.seq, &r.id, &r.timeNS, &r.kind, &r.src, &r.srcSel, &r.dst, &r.dstSel,
			&r.method, &r.tool, &r.decis, &r.body, &r.hash); err != nil {
			return rep, err
		}
		want := seq + 1
		if r.seq != want {
			if r.seq > want {
				return fail(want, "", "events %d..%d are missing (next stored event is seq %d, id %s)", want, r.seq-1, r.seq, r.id)
			}
			return fail(r.seq, r.id, "event lies at or before the prune point (seq %d)", start)
		}
		e, err := DecodeEvent(r.body)
		if err != nil {
			return fail(r.seq, r.id, "stored event does not decode: %v", err)
		}
		canon, err := Canonical(&e)
		if err != nil || !bytes.Equal(canon, r.body) {
			return fail(r.seq, r.id, "stored event is not in canonical form")
		}
		h := ChainHash(prev, r.seq, r.body)
		if !bytes.Equal(h[:], r.hash) {
			return fail(r.seq, r.id, "hash mismatch: the event, its seq or an earlier event was changed, inserted or removed")
		}
		switch {
		case e.ID != r.id:
			return fail(r.seq, r.id, "id column disagrees with the hashed event (%s)", e.ID)
		case e.Time.UnixNano() != r.timeNS:
			return fail(r.seq, r.id, "time column disagrees with the hashed event")
		case string(e.Kind) != r.kind, e.Src != r.src, e.Dst != r.dst, e.Method != r.method,
			e.Tool != r.tool, e.Decision != r.decis, selectorOf(e.Src) != r.srcSel, selectorOf(e.Dst) != r.dstSel:
			return fail(r.seq, r.id, "a filter column disagrees with the hashed event")
		}
		for len(cps) > 0 && cps[0].seq == r.seq {
			if !bytes.Equal(cps[0].head, h[:]) {
				return fail(r.seq, r.id, "%v disagrees with the chain: events up to seq %d were changed", cps[0], r.seq)
			}
			cps = cps[1:]
		}
		if rep.Events == 0 {
			rep.FirstSeq = r.seq
		}
		rep.Events++
		rep.LastSeq = r.seq
		seq, prev = r.seq, h
	}
	if err := rows.Err(); err != nil {
		return rep, err
	}
	if len(cps) > 0 {
		return fail(cps[0].seq, "", "%v covers seq %d but the chain ends at seq %d: signed events were deleted", cps[0], cps[0].seq, seq)
	}
	rep.OK = true
	return rep, nil
}

// padHash returns b as a Hash; callers check the length first.
func padHash(b []byte) (h Hash) {
	copy(h[:], b)
	return h
}
