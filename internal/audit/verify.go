package audit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of Verify: what it proved, and the limits of what
// it could prove. Its zero value is not OK.
type Report struct {
	// OK is true when the chain, every checkpoint, the prune point and
	// every receipt (with its batch) check out. Id conflicts do not make
	// it false: they are events recorded in an intact chain, reported in
	// Conflicts.
	OK bool `json:"ok"`
	// Events is how many events were verified, FirstSeq..LastSeq: the
	// hash chain was recomputed over each of them.
	Events   int64 `json:"events"`
	FirstSeq int64 `json:"first_seq,omitempty"`
	LastSeq  int64 `json:"last_seq,omitempty"`
	// Checkpoints is how many signed checkpoints stored in the database
	// were verified; SignedThrough is the newest one's seq (or the prune
	// point's). Events after it are only chained as far as the database
	// can tell: deleting them together with their checkpoints is not
	// detectable without receipts.
	Checkpoints   int64 `json:"checkpoints"`
	SignedThrough int64 `json:"signed_through"`
	// Receipts is how many receipts given to Verify were checked, and
	// ReceiptsThrough the newest one's seq: the chain must reach each
	// receipt's head with the hash it signed.
	Receipts        int64 `json:"receipts,omitempty"`
	ReceiptsThrough int64 `json:"receipts_through,omitempty"`
	// ReceiptEvents is how many events of the receipts' batches were found
	// stored exactly as their senders sent them; ReceiptEventsPruned is
	// how many could not be checked because they were pruned.
	ReceiptEvents       int64 `json:"receipt_events,omitempty"`
	ReceiptEventsPruned int64 `json:"receipt_events_pruned,omitempty"`
	// PrunedThrough is the seq of the signed prune point the chain starts
	// after (0: nothing was pruned).
	PrunedThrough int64 `json:"pruned_through,omitempty"`
	// Conflicts counts the id_conflict integrity events in the chain: a
	// node shipped different content under an event id already stored.
	// ConflictIDs names the first few conflicting event ids.
	Conflicts   int64    `json:"conflicts,omitempty"`
	ConflictIDs []string `json:"conflict_ids,omitempty"`
	// Key is the SHA-256 fingerprint (hex) of the public key signatures
	// were checked with. Whoever holds the matching private key can sign
	// any history; compare it with a copy kept elsewhere.
	Key string `json:"key,omitempty"`
	// BrokenSeq and BrokenID name the first entry that failed (the event at
	// that seq, or a checkpoint at that seq); Problem says why.
	BrokenSeq int64  `json:"broken_seq,omitempty"`
	BrokenID  string `json:"broken_id,omitempty"`
	Problem   string `json:"problem,omitempty"`
}

// maxConflictIDs bounds Report.ConflictIDs.
const maxConflictIDs = 5

// Unwitnessed is the seq range after every signature (stored checkpoint
// or receipt): events there are only chained, and deleting them with the
// checkpoints that covered them is not detected. first > last when every
// event is covered.
func (r Report) Unwitnessed() (first, last int64) {
	signed := max(r.SignedThrough, r.ReceiptsThrough)
	if r.Events == 0 || r.LastSeq <= signed {
		return 1, 0
	}
	return max(signed+1, r.FirstSeq), r.LastSeq
}

// String says, for people, what was proved and what could not be: the
// report's Lines joined.
func (r Report) String() string { return strings.Join(r.Lines(), "\n") }

// Lines is the report for people, one line per element; continuation lines
// are indented by two spaces. Fields that came from the database (a broken
// event's id, the problem found) are inside one element whatever they
// hold, so a program that escapes each element for a terminal keeps the
// report's own line breaks and no others.
func (r Report) Lines() []string {
	if !r.OK {
		if r.Problem == "" {
			return []string{"audit trail not verified"}
		}
		id := ""
		if r.BrokenID != "" {
			id = " (event " + r.BrokenID + ")"
		}
		return []string{fmt.Sprintf("audit trail BROKEN at seq %d%s: %s", r.BrokenSeq, id, r.Problem)}
	}
	var lines []string
	var b strings.Builder
	fmt.Fprintf(&b, "audit trail intact: %d events", r.Events)
	if r.Events > 0 {
		fmt.Fprintf(&b, ", hash chain recomputed over seq %d..%d", r.FirstSeq, r.LastSeq)
	}
	if r.PrunedThrough > 0 {
		fmt.Fprintf(&b, " (pruned through seq %d at a signed prune point)", r.PrunedThrough)
	}
	lines = append(lines, b.String())
	b.Reset()
	fmt.Fprintf(&b, "  signed: %d checkpoints in the database, through seq %d", r.Checkpoints, r.SignedThrough)
	if r.Key != "" {
		fmt.Fprintf(&b, " (key sha256:%s)", r.Key)
	}
	lines = append(lines, b.String())
	b.Reset()
	if r.Receipts > 0 {
		fmt.Fprintf(&b, "  receipts: %d checked, through seq %d; %d events of their batches are stored as sent",
			r.Receipts, r.ReceiptsThrough, r.ReceiptEvents)
		if r.ReceiptEventsPruned > 0 {
			fmt.Fprintf(&b, " (%d more were pruned)", r.ReceiptEventsPruned)
		}
	} else {
		b.WriteString("  receipts: none given; pass --receipt STATE/audit-receipt.json of each gateway to check what they sent")
	}
	lines = append(lines, b.String())
	if first, last := r.Unwitnessed(); first <= last {
		l := fmt.Sprintf("  not proved: seq %d..%d are only chained; deleting them together with their checkpoints would go unnoticed", first, last)
		if r.Receipts == 0 {
			l += " (a gateway's receipt covering them would show it)"
		}
		lines = append(lines, l)
	}
	if r.Conflicts > 0 {
		lines = append(lines, fmt.Sprintf("  ATTENTION: %d event ids arrived again with different content (first: %s); the chain itself is intact; see: agentmesh audit --kind integrity",
			r.Conflicts, strings.Join(r.ConflictIDs, ", ")))
	}
	return lines
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
	rep := Report{Key: KeyFingerprint(pub)}
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
	// Receipts are checked first: they are self-contained, and a batch's
	// seqs tell the chain scan which rows' content to hash.
	need := map[int64]Hash{}
	for i, r := range receipts {
		if err := r.Validate(); err != nil {
			return fail(r.Seq, "", "receipt %d is malformed: %v", i+1, err)
		}
		c, _ := r.row()
		c.receipt = i + 1
		if err := r.Check(pub); err != nil {
			return fail(c.seq, "", "%v (signed %s) has an invalid signature", c, r.Time.UTC().Format(time.RFC3339))
		}
		if r.Batch != nil {
			seqs, _ := r.Batch.seqs(r.Seq)
			for _, s := range seqs {
				need[s] = Hash{}
			}
		}
		cps = append(cps, c)
	}
	slices.SortStableFunc(cps, func(a, b checkpointRow) int { return cmp.Compare(a.seq, b.seq) })
	ahead := cps[:0] // checkpoints the chain must still reach
	for _, c := range cps {
		if len(c.head) != HashSize {
			return fail(c.seq, "", "%v has a malformed hash", c)
		}
		h := padHash(c.head)
		if c.receipt > 0 {
			rep.Receipts++
			rep.ReceiptsThrough = max(rep.ReceiptsThrough, c.seq)
		} else {
			if !ed25519.Verify(pub, checkpointMessage(c.seq, h, c.at), c.sig) {
				return fail(c.seq, "", "%v (signed %s) has an invalid signature", c, time.Unix(0, c.at).UTC().Format(time.RFC3339))
			}
			rep.Checkpoints++
			rep.SignedThrough = max(rep.SignedThrough, c.seq)
		}
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
			e.Tool != r.tool, string(e.Decision) != r.decis, selectorOf(e.Src) != r.srcSel, selectorOf(e.Dst) != r.dstSel:
			return fail(r.seq, r.id, "a filter column disagrees with the hashed event")
		}
		if e.Kind == KindIntegrity && e.Reason == ReasonIDConflict {
			if rep.Conflicts < maxConflictIDs {
				rep.ConflictIDs = append(rep.ConflictIDs, e.Target)
			}
			rep.Conflicts++
		}
		if _, ok := need[r.seq]; ok {
			need[r.seq] = keptContentHash(&e, r.body)
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
	// Each receipt's batch: the rows at its seqs must hold what the
	// sender sent. The chain reaching the receipt's head proves the rows
	// were not changed after the coordinator signed; this proves the
	// coordinator stored what it was sent.
	for i, r := range receipts {
		if r.Batch == nil {
			continue
		}
		seqs, _ := r.Batch.seqs(r.Seq)
		if slices.ContainsFunc(seqs, func(s int64) bool { return s <= start }) {
			rep.ReceiptEventsPruned += int64(len(seqs))
			continue
		}
		hashes := make([]Hash, len(seqs))
		for j, s := range seqs {
			hashes[j] = need[s]
		}
		d := batchDigest(seqs, hashes)
		if hex.EncodeToString(d[:]) != r.Batch.Digest {
			return fail(r.Seq, "", "receipt %d: the stored events of its batch (seq %s) are not the events the sender shipped: one was altered or replaced",
				i+1, rangesString(r.Batch.Seqs))
		}
		rep.ReceiptEvents += int64(len(seqs))
	}
	rep.OK = true
	return rep, nil
}

// keptContentHash is the hash of the content the row of e keeps for a
// batch: its own canonical bytes, or for an id_conflict integrity event the
// rejected event it keeps.
func keptContentHash(e *Event, body []byte) Hash {
	if e.Kind == KindIntegrity && e.Reason == ReasonIDConflict {
		var d ConflictDetail
		if json.Unmarshal([]byte(e.Detail), &d) == nil && len(d.Rejected) > 0 {
			return sha256.Sum256(d.Rejected)
		}
	}
	return sha256.Sum256(body)
}

// rangesString prints seq ranges as "1..5, 9".
func rangesString(rs []SeqRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprint(r[0])
		if r[1] != r[0] {
			parts[i] += fmt.Sprintf("..%d", r[1])
		}
	}
	return strings.Join(parts, ", ")
}

// KeyFingerprint is the hex SHA-256 of an audit public key, as Report.Key
// prints it.
func KeyFingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// padHash returns b as a Hash; callers check the length first.
func padHash(b []byte) (h Hash) {
	copy(h[:], b)
	return h
}
