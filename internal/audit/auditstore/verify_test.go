package auditstore

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/store"
)

// chainWithCheckpoints stores 30 events with checkpoints at 10, 20 and 30.
func chainWithCheckpoints(t *testing.T) (*Store, *store.DB, []byte) {
	t.Helper()
	s, db, pub := testStore(t, Options{CheckpointEvents: 10})
	for i := range 3 {
		if _, err := s.Append(context.Background(), testEvents(i*10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	return s, db, pub
}

func mustExec(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(portable(q), args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name      string
		tamper    func(t *testing.T, db *store.DB)
		brokenSeq int64
		problem   string
	}{
		{"edited body", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_events SET body = replace(body, '"deny"', '"allow"') WHERE seq = 12`)
		}, 12, "hash mismatch"},
		{"edited filter column", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_events SET decision = 'allow' WHERE seq = 12`)
		}, 12, "column disagrees"},
		{"edited selector column", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_events SET src_sel = 'agent:someone-else' WHERE seq = 5`)
		}, 5, "column disagrees"},
		{"edited time column", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_events SET time_ns = time_ns + 1 WHERE seq = 7`)
		}, 7, "time column"},
		{"edited stored hash", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_events SET hash = zeroblob(32) WHERE seq = 3`)
		}, 3, "hash mismatch"},
		{"deleted row", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq = 15`)
		}, 15, "missing"},
		{"deleted signed tail", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `DELETE FROM audit_events WHERE seq > 25`)
		}, 30, "signed events were deleted"},
		{"inserted row", func(t *testing.T, db *store.DB) {
			// Make room by shifting rows up, then insert a copy of row 5 as 6.
			mustExec(t, db, `UPDATE audit_events SET seq = seq + 1000 WHERE seq > 5`)
			mustExec(t, db, `UPDATE audit_events SET seq = seq - 999 WHERE seq > 1000`)
			mustExec(t, db, `INSERT INTO audit_events (seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash)
				SELECT 6, 'ffffffffffffffffffffffffffffffff', time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision,
				replace(body, id, 'ffffffffffffffffffffffffffffffff'), hash FROM audit_events WHERE seq = 5`)
		}, 6, "hash mismatch"},
		{"two rows swapped", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_events SET seq = -1 WHERE seq = 8`)
			mustExec(t, db, `UPDATE audit_events SET seq = 8 WHERE seq = 9`)
			mustExec(t, db, `UPDATE audit_events SET seq = 9 WHERE seq = -1`)
		}, 8, "hash mismatch"},
		{"chain rewritten without the key", func(t *testing.T, db *store.DB) {
			rewriteChainFrom(t, db, 14, `"deny"`, `"allow"`)
		}, 20, "checkpoint"},
		{"forged checkpoint signature", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_checkpoints SET sig = zeroblob(64) WHERE seq = 20`)
		}, 20, "invalid signature"},
		{"checkpoint moved", func(t *testing.T, db *store.DB) {
			mustExec(t, db, `UPDATE audit_checkpoints SET seq = 19 WHERE seq = 20`)
		}, 19, "invalid signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, db, pub := chainWithCheckpoints(t)
			tt.tamper(t, db)
			rep, err := Verify(context.Background(), db, pub)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK {
				t.Fatalf("tampering not detected: %v", rep)
			}
			if rep.BrokenSeq != tt.brokenSeq || !strings.Contains(rep.Problem, tt.problem) {
				t.Fatalf("report %q, want broken seq %d with %q", rep, tt.brokenSeq, tt.problem)
			}
		})
	}
}

// portable rewrites the SQLite functions the tampering statements use
// for PostgreSQL: replace() on a BYTEA body and zeroblob().
func portable(q string) string {
	if backend != store.Postgres {
		return q
	}
	q = bodyReplace.ReplaceAllString(q, "convert_to(replace(convert_from(body, 'UTF8'), $1, $2), 'UTF8')")
	return zeroBlob.ReplaceAllString(q, "decode(repeat('00', $1), 'hex')")
}

var (
	bodyReplace = regexp.MustCompile(`replace\(body, ([^,]+), ([^)]+)\)`)
	zeroBlob    = regexp.MustCompile(`zeroblob\((\d+)\)`)
)

// rewriteChainFrom edits events from seq on and recomputes their hashes, as
// someone without the signing key could.
func rewriteChainFrom(t *testing.T, db *store.DB, from int64, old, new string) {
	t.Helper()
	mustExec(t, db, `UPDATE audit_events SET body = replace(body, $1, $2), decision = replace(decision, $3, $4) WHERE seq >= $5`,
		old, new, strings.Trim(old, `"`), strings.Trim(new, `"`), from)
	var prevB []byte
	if err := db.QueryRow(`SELECT hash FROM audit_events WHERE seq = $1`, from-1).Scan(&prevB); err != nil {
		t.Fatal(err)
	}
	prev := audit.Hash(prevB)
	rows, err := db.Query(`SELECT seq, body FROM audit_events WHERE seq >= $1 ORDER BY seq`, from)
	if err != nil {
		t.Fatal(err)
	}
	type upd struct {
		seq int64
		h   audit.Hash
	}
	var ups []upd
	for rows.Next() {
		var seq int64
		var body []byte
		rows.Scan(&seq, &body)
		prev = audit.ChainHash(prev, seq, body)
		ups = append(ups, upd{seq, prev})
	}
	rows.Close()
	for _, u := range ups {
		mustExec(t, db, `UPDATE audit_events SET hash = $1 WHERE seq = $2`, u.h[:], u.seq)
	}
}

func TestVerifyPassesIntactChainAndNamesUnsignedTail(t *testing.T) {
	s, db, pub := chainWithCheckpoints(t)
	if _, err := s.Append(context.Background(), testEvents(30, 5)); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(context.Background(), db, pub)
	if err != nil || !rep.OK {
		t.Fatalf("Verify = %v, %v", rep, err)
	}
	if rep.Events != 35 || rep.Checkpoints != 3 || rep.SignedThrough != 30 || rep.LastSeq != 35 {
		t.Fatalf("report %+v", rep)
	}
	if first, last := rep.Unwitnessed(); first != 31 || last != 35 {
		t.Fatalf("Unwitnessed = %d..%d, want 31..35", first, last)
	}
	if !strings.Contains(rep.String(), "seq 31..35") {
		t.Fatalf("String() does not name the unsigned tail: %q", rep.String())
	}
	// The documented limit: deleting unsigned newest rows is not detected.
	mustExec(t, db, `DELETE FROM audit_events WHERE seq > 30`)
	if rep, err := Verify(context.Background(), db, pub); err != nil || !rep.OK {
		t.Fatalf("Verify after deleting the unsigned tail = %v, %v", rep, err)
	}
}

func TestVerifyPassesAfterPruneAndStillDetectsTampering(t *testing.T) {
	s, db, pub := chainWithCheckpoints(t)
	ctx := context.Background()
	// Events 0..29 are at testBase+i milliseconds. Cut at event 24's time: the
	// newest checkpoint before it is at seq 20.
	deleted, err := s.Prune(ctx, testBase.Add(24*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 20 {
		t.Fatalf("pruned %d events, want 20", deleted)
	}
	if _, err := s.Append(ctx, testEvents(30, 5)); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, db, pub)
	if err != nil || !rep.OK {
		t.Fatalf("Verify after prune = %v, %v", rep, err)
	}
	if rep.PrunedThrough != 20 || rep.FirstSeq != 21 || rep.Events != 15 {
		t.Fatalf("report %+v", rep)
	}
	// Pruning again to the same point does nothing.
	if n, err := s.Prune(ctx, testBase.Add(24*time.Millisecond)); err != nil || n != 0 {
		t.Fatalf("second Prune = %d, %v", n, err)
	}

	for _, tamper := range []struct {
		name string
		sql  string
	}{
		{"edit after prune", `UPDATE audit_events SET body = replace(body, '"deny"', '"allow"') WHERE seq = 22`},
		{"move the prune point", `UPDATE audit_prune SET seq = 25`},
		{"delete the prune point", `DELETE FROM audit_prune`},
		{"delete the first kept row", `DELETE FROM audit_events WHERE seq = 21`},
	} {
		t.Run(tamper.name, func(t *testing.T) {
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := tx.Exec(portable(tamper.sql)); err != nil {
				t.Fatal(err)
			}
			rep, err := verifyTx(ctx, tx, pub, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK {
				t.Fatalf("not detected: %v", rep)
			}
		})
	}
}

func TestPruneRefusesTamperedTrail(t *testing.T) {
	s, db, _ := chainWithCheckpoints(t)
	mustExec(t, db, `UPDATE audit_events SET decision = 'allow' WHERE seq = 2`)
	if _, err := s.Prune(context.Background(), testBase.Add(time.Hour)); err == nil {
		t.Fatal("Prune deleted evidence of tampering")
	}
}

func TestVerifyWithReceiptDetectsTailDeletedWithItsCheckpoints(t *testing.T) {
	ctx := context.Background()
	s, db, pub := chainWithCheckpoints(t)
	r, err := s.Receipt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 30 || r.Check(pub) != nil {
		t.Fatalf("receipt %+v: seq want 30, check %v", r, r.Check(pub))
	}
	// The attacker removes the last events and every checkpoint that
	// mentions them: the database alone still verifies.
	mustExec(t, db, `DELETE FROM audit_events WHERE seq > 25`)
	mustExec(t, db, `DELETE FROM audit_checkpoints WHERE seq > 20`)
	if rep, err := Verify(ctx, db, pub); err != nil || !rep.OK {
		t.Fatalf("without receipts: %v %v (the limitation receipts address)", rep, err)
	}
	rep, err := Verify(ctx, db, pub, r)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.BrokenSeq != 30 || !strings.Contains(rep.Problem, "receipt 1 (seq 30)") || !strings.Contains(rep.Problem, "deleted") {
		t.Fatalf("with the receipt: %+v", rep)
	}
}

func TestVerifyRejectsForgedReceiptAndAcceptsAGoodOne(t *testing.T) {
	ctx := context.Background()
	s, db, pub := chainWithCheckpoints(t)
	good, err := s.Receipt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(ctx, db, pub, good); err != nil || !rep.OK || rep.Receipts != 1 {
		t.Fatalf("good receipt: %+v %v", rep, err)
	}
	forged := good
	forged.Seq = 29 // claims another position under the same signature
	rep, err := Verify(ctx, db, pub, forged)
	if err != nil || rep.OK || !strings.Contains(rep.Problem, "invalid signature") {
		t.Fatalf("forged receipt: %+v %v", rep, err)
	}
	bad := good
	bad.Head = "zz"
	if rep, err := Verify(ctx, db, pub, bad); err != nil || rep.OK || !strings.Contains(rep.Problem, "malformed") {
		t.Fatalf("malformed receipt: %+v %v", rep, err)
	}
}
