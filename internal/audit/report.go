package audit

import (
	"fmt"
	"strings"
)

// Report is the outcome of verifying a trail (auditstore.Verify), as the
// coordinator's API returns it and the CLI prints it: what it proved, and the limits of what
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

// MaxConflictIDs bounds Report.ConflictIDs.
const MaxConflictIDs = 5

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
