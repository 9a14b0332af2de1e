package auditstore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/store"
)

const (
	testCoordinator = "spiffe://mesh.test/admin/coordinator"
	toolA           = "spiffe://mesh.test/tool/a"
	toolB           = "spiffe://mesh.test/tool/b"
)

// eventsFor returns n request events recorded by the node dst.
func eventsFor(dst string, from, n int) []audit.Event {
	ev := testEvents(from, n)
	for i := range ev {
		ev[i].Dst = dst
	}
	return ev
}

func TestIngestRefusesEventForAnotherRecorder(t *testing.T) {
	s, db, _ := testStore(t, Options{Self: testCoordinator})
	ctx := context.Background()
	tests := []struct {
		name string
		edit func(*audit.Event)
	}{
		{"another gateway's decision", func(e *audit.Event) { e.Dst = toolB }},
		// The shipper is the source: "the gateway allowed me X".
		{"the shipper as source of another's decision", func(e *audit.Event) { e.Src, e.Dst = toolA, toolB }},
		{"no destination", func(e *audit.Event) { e.Dst = "" }},
		{"destination as a selector", func(e *audit.Event) { e.Dst = "tool:a" }},
		{"admin event", func(e *audit.Event) { e.Kind = audit.KindAdmin }},
		{"integrity event", func(e *audit.Event) { e.Kind = audit.KindIntegrity }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch := eventsFor(toolA, 0, 3)
			tt.edit(&batch[1])
			_, err := s.Ingest(ctx, toolA, batch)
			var fe *ForeignEventError
			if !errors.As(err, &fe) || !errors.Is(err, ErrForeignEvent) || fe.Index != 1 {
				t.Fatalf("Ingest = %v, want a ForeignEventError for event 1", err)
			}
			var n int
			db.QueryRow(`SELECT count(*) FROM audit_events`).Scan(&n)
			if n != 0 {
				t.Fatalf("%d events stored from a refused batch", n)
			}
		})
	}
}

func TestIngestNamespacesIDsByRecorder(t *testing.T) {
	s, db, pub := testStore(t, Options{Self: testCoordinator})
	ctx := context.Background()
	// Node B learned the id of A's event (a denial answer carries it) and
	// ships its own event under it first.
	real := eventsFor(toolA, 0, 1)
	claim := eventsFor(toolB, 0, 1)
	claim[0].Outcome = "forged"
	if r, err := s.Ingest(ctx, toolB, claim); err != nil || r.Added != 1 {
		t.Fatalf("B's event: %+v %v", r, err)
	}
	r, err := s.Ingest(ctx, toolA, real)
	if err != nil || r.Added != 1 || len(r.Conflicts) != 0 {
		t.Fatalf("A's event after B claimed its id: %+v %v; want it added", r, err)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM audit_events WHERE id = $1`, real[0].ID).Scan(&n)
	if n != 2 {
		t.Fatalf("%d events under the id, want one per recorder", n)
	}
	if err := r.Receipt.CheckBatch(pub, real); err != nil {
		t.Fatalf("A's receipt: %v", err)
	}
}

func TestIngestKeepsConflictingContentAsIntegrityEvent(t *testing.T) {
	s, db, pub := testStore(t, Options{Self: testCoordinator})
	ctx := context.Background()
	batch := eventsFor(toolA, 0, 4)
	if r, err := s.Ingest(ctx, toolA, batch); err != nil || r.Added != 4 {
		t.Fatalf("first delivery: %+v %v", r, err)
	}
	// Re-sent identically: idempotent, every event accounted for.
	r, err := s.Ingest(ctx, toolA, batch)
	if err != nil || r.Added != 0 || r.Duplicates != 4 || len(r.Conflicts) != 0 {
		t.Fatalf("re-sent batch: %+v %v", r, err)
	}
	if r.Seqs[0] != 1 || r.Seqs[3] != 4 {
		t.Fatalf("re-sent batch seqs %v, want the stored ones", r.Seqs)
	}
	// The same id with other content: kept, flagged, never dropped.
	changed := eventsFor(toolA, 2, 2) // ids of events 2 and 3
	changed[0].Reason = "not_granted"
	changed[1] = eventsFor(toolA, 10, 1)[0]
	r, err = s.Ingest(ctx, toolA, changed)
	if err != nil {
		t.Fatal(err)
	}
	if r.Added != 1 || r.Duplicates != 0 || len(r.Conflicts) != 1 {
		t.Fatalf("conflicting batch: %+v", r)
	}
	c := r.Conflicts[0]
	if c.Index != 0 || c.ID != changed[0].ID || c.StoredSeq != 3 || c.Seq != r.Seqs[0] {
		t.Fatalf("conflict %+v, seqs %v", c, r.Seqs)
	}
	if err := r.Receipt.CheckBatch(pub, changed); err != nil {
		t.Fatalf("the receipt of a batch with a conflict does not bind it: %v", err)
	}
	var ie []audit.Event
	if err := s.Query(ctx, Filter{Kind: audit.KindIntegrity}, func(e audit.Event) error { ie = append(ie, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ie) != 1 || ie[0].Reason != audit.ReasonIDConflict || ie[0].Src != toolA || ie[0].Dst != testCoordinator || ie[0].Target != c.ID {
		t.Fatalf("integrity events %+v", ie)
	}
	var d audit.ConflictDetail
	if err := json.Unmarshal([]byte(ie[0].Detail), &d); err != nil {
		t.Fatal(err)
	}
	rejected, _ := audit.Canonical(&changed[0])
	stored, _ := audit.Canonical(&batch[2])
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	if string(d.Rejected) != string(rejected) || d.RejectedSHA256 != sum(rejected) || d.StoredSHA256 != sum(stored) || d.StoredSeq != 3 {
		t.Fatalf("conflict detail %+v", d)
	}
	// The stored event is untouched.
	var body []byte
	db.QueryRow(`SELECT body FROM audit_events WHERE seq = 3`).Scan(&body)
	if string(body) != string(stored) {
		t.Fatalf("stored event changed: %s", body)
	}
	rep, err := Verify(ctx, db, pub, r.Receipt)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Conflicts != 1 || len(rep.ConflictIDs) != 1 || rep.ConflictIDs[0] != c.ID || rep.ReceiptEvents != 2 {
		t.Fatalf("verify: %+v", rep)
	}
	if !strings.Contains(rep.String(), c.ID) {
		t.Fatalf("String() does not name the conflicting id: %s", rep)
	}
}

func TestReceiptBindsBatchContent(t *testing.T) {
	s, _, pub := testStore(t, Options{Self: testCoordinator})
	ctx := context.Background()
	if _, err := s.Ingest(ctx, toolA, eventsFor(toolA, 100, 3)); err != nil {
		t.Fatal(err)
	}
	batch := eventsFor(toolA, 0, 5)
	r, err := s.Ingest(ctx, toolA, batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Receipt.CheckBatch(pub, batch); err != nil {
		t.Fatalf("genuine receipt: %v", err)
	}
	if got := r.Receipt.Batch.Seqs; len(got) != 1 || got[0] != (audit.SeqRange{4, 8}) {
		t.Fatalf("seq ranges %v, want [4 8]", got)
	}
	altered := append([]audit.Event(nil), batch...)
	altered[2].Reason = "not_granted"
	for name, sent := range map[string][]audit.Event{
		"one more event sent":         append(append([]audit.Event(nil), batch...), eventsFor(toolA, 9, 1)...),
		"fewer events sent":           batch[:4],
		"other content":               altered,
		"the same events reordered":   {batch[1], batch[0], batch[2], batch[3], batch[4]},
		"another batch with same len": eventsFor(toolA, 50, 5),
	} {
		if err := r.Receipt.CheckBatch(pub, sent); !errors.Is(err, audit.ErrNotKept) {
			t.Errorf("%s: CheckBatch = %v, want audit.ErrNotKept", name, err)
		}
	}
	// A receipt whose batch was edited no longer verifies.
	edited := r.Receipt
	b := *edited.Batch
	b.Seqs = []audit.SeqRange{{3, 7}}
	edited.Batch = &b
	if err := edited.CheckBatch(pub, batch); !errors.Is(err, audit.ErrNotKept) {
		t.Errorf("edited ranges: CheckBatch = %v, want audit.ErrNotKept", err)
	}
	// A head-only receipt binds no batch.
	head, err := s.Receipt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := head.CheckBatch(pub, batch); !errors.Is(err, audit.ErrNotKept) {
		t.Errorf("head-only receipt: CheckBatch = %v, want audit.ErrNotKept", err)
	}
}

// TestVerifyReceiptDetectsBatchNotStoredAsSent: a coordinator that answered
// a gateway with a receipt for what it was sent, but stored something else
// (here: the signing key's holder writes it), is caught by Verify given
// that receipt, although the chain and every signature hold.
func TestVerifyReceiptDetectsBatchNotStoredAsSent(t *testing.T) {
	ctx := context.Background()
	s, db, pub := testStore(t, Options{Self: testCoordinator})
	sent := eventsFor(toolA, 0, 3)
	stored := append([]audit.Event(nil), sent...)
	stored[1].Reason = "not_granted" // what the dishonest side stored instead
	r, err := s.Ingest(ctx, toolA, stored)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway would have refused this receipt at once.
	if err := r.Receipt.CheckBatch(pub, sent); !errors.Is(err, audit.ErrNotKept) {
		t.Fatalf("gateway check = %v, want audit.ErrNotKept", err)
	}
	// Suppose it was answered with one for what it sent, at the real head.
	hashes := make([]audit.Hash, len(sent))
	for i := range sent {
		c, _ := audit.Canonical(&sent[i])
		hashes[i] = sha256.Sum256(c)
	}
	s.mu.Lock()
	lie, err := s.signLocked(audit.NewBatchCommit(r.Seqs, hashes))
	s.mu.Unlock()
	if err != nil || lie.CheckBatch(pub, sent) != nil {
		t.Fatalf("forged receipt: %v", err)
	}
	rep, err := Verify(ctx, db, pub, lie)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || !strings.Contains(rep.Problem, "receipt 1") || !strings.Contains(rep.Problem, "seq 1..3") {
		t.Fatalf("verify: %+v", rep)
	}
	if rep, err := Verify(ctx, db, pub, r.Receipt); err != nil || !rep.OK || rep.ReceiptEvents != 3 {
		t.Fatalf("verify with the honest receipt: %+v %v", rep, err)
	}
}

func TestParseReceiptReadsOldFilesAndRefusesMalformedOnes(t *testing.T) {
	s, _, pub := testStore(t, Options{Self: testCoordinator})
	ctx := context.Background()
	batch := eventsFor(toolA, 0, 3)
	r, err := s.Ingest(ctx, toolA, batch)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r.Receipt)
	got, err := audit.ParseReceipt(b)
	if err != nil || got.CheckBatch(pub, batch) != nil {
		t.Fatalf("round trip: %v", err)
	}
	// A version 1 receipt file (a signed head only) is still read and
	// checks as a signed head.
	head, err := s.Receipt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v1 := `{"seq":` + jsonString(head.Seq) + `,"head":"` + head.Head + `","time":"` + head.Time.Format("2006-01-02T15:04:05.999999999Z07:00") + `","sig":"` + head.Sig + `"}`
	old, err := audit.ParseReceipt([]byte(v1))
	if err != nil || old.Check(pub) != nil || old.Batch != nil {
		t.Fatalf("v1 receipt: %+v %v", old, err)
	}
	for name, in := range map[string]string{
		"unknown field":      `{"seq":1,"head":"` + head.Head + `","time":"2026-01-01T00:00:00Z","sig":"` + head.Sig + `","x":1}`,
		"trailing data":      v1 + ` {}`,
		"huge seq range":     strings.Replace(string(b), `"seqs":[[1,3]]`, `"seqs":[[1,9223372036854775807]]`, 1),
		"range beyond head":  strings.Replace(string(b), `"seqs":[[1,3]]`, `"seqs":[[1,2],[4,4]]`, 1),
		"too many events":    strings.Replace(string(b), `"events":3`, `"events":10001`, 1),
		"ranges miss events": strings.Replace(string(b), `"seqs":[[1,3]]`, `"seqs":[[1,2]]`, 1),
		"bad digest":         strings.Replace(string(b), `"digest":"`, `"digest":"zz`, 1),
		"not json":           `nope`,
	} {
		if _, err := audit.ParseReceipt([]byte(in)); !errors.Is(err, audit.ErrBadReceipt) {
			t.Errorf("%s: audit.ParseReceipt = %v, want audit.ErrBadReceipt", name, err)
		}
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestStoreMigratesToRecorderNamespacedIDs(t *testing.T) {
	ctx := context.Background()
	db := testDB(t)
	// A trail written by the version 1 schema.
	if err := store.Migrate(ctx, db, "audit", migrations[:1]); err != nil {
		t.Fatal(err)
	}
	var prev audit.Hash
	old := eventsFor(toolA, 0, 5)
	for i := range old {
		c, _ := audit.Canonical(&old[i])
		h := audit.ChainHash(prev, int64(i+1), c)
		e := &old[i]
		if _, err := db.Exec(`INSERT INTO audit_events (seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, i+1, e.ID, e.Time.UnixNano(), string(e.Kind), e.Src, selectorOf(e.Src),
			e.Dst, selectorOf(e.Dst), e.Method, e.Tool, e.Decision, c, h[:]); err != nil {
			t.Fatal(err)
		}
		prev = h
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := New(ctx, db, priv, Options{Self: testCoordinator})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(ctx, db, pub); err != nil || !rep.OK || rep.Events != 5 {
		t.Fatalf("verify after migration: %+v %v", rep, err)
	}
	// The chain continues, and another recorder may now use the same ids.
	r, err := s.Ingest(ctx, toolB, eventsFor(toolB, 0, 5))
	if err != nil || r.Added != 5 || r.Seqs[0] != 6 {
		t.Fatalf("ingest after migration: %+v %v", r, err)
	}
	if r, err := s.Ingest(ctx, toolA, old); err != nil || r.Duplicates != 5 {
		t.Fatalf("re-sent old events: %+v %v", r, err)
	}
	if rep, err := Verify(ctx, db, pub); err != nil || !rep.OK || rep.Events != 10 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// FuzzParseReceipt feeds arbitrary bytes to the receipt decoder, as a
// receipt file (audit verify --receipt) or a coordinator's answer (a
// gateway's Send) would: it must not panic or loop over huge ranges, what
// it accepts must be well-formed and survive a round trip, and checking it
// against a real trail must give a report, not an error.
func FuzzParseReceipt(f *testing.F) {
	s, db, pub := testStore(f, Options{Self: testCoordinator, CheckpointEvents: -1})
	ctx := context.Background()
	batch := eventsFor(toolA, 0, 4)
	r, err := s.Ingest(ctx, toolA, batch)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(r.Receipt)
	head, _ := s.Receipt(ctx)
	v1, _ := json.Marshal(head)
	f.Add(good)
	f.Add(v1)
	for _, edit := range []struct{ old, new string }{
		{`"seqs":[[1,4]]`, `"seqs":[[1,9223372036854775807]]`},
		{`"seqs":[[1,4]]`, `"seqs":[[4,1]]`},
		{`"seqs":[[1,4]]`, `"seqs":[[1,2],[2,3]]`},
		{`"seqs":[[1,4]]`, `"seqs":[[-5,4]]`},
		{`"events":4`, `"events":-1`},
		{`"events":4`, `"events":1000000000`},
		{`"seq":4`, `"seq":0`},
		{`"digest":"`, `"digest":"0`},
	} {
		f.Add([]byte(strings.Replace(string(good), edit.old, edit.new, 1)))
	}
	f.Add([]byte(`{"seq":1,"head":"","time":"2026-01-01T00:00:00Z","sig":"","batch":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := audit.ParseReceipt(b)
		if err != nil {
			if !errors.Is(err, audit.ErrBadReceipt) {
				t.Fatalf("error %v does not wrap audit.ErrBadReceipt", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted a receipt that does not validate: %v", err)
		}
		again, _ := json.Marshal(r)
		if _, err := audit.ParseReceipt(again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if r.Check(pub) == nil && r.Batch != nil && r.CheckBatch(pub, batch) == nil && r.Seq != 4 {
			t.Fatalf("a receipt for another head checks out: %+v", r)
		}
		if _, err := Verify(ctx, db, pub, r); err != nil {
			t.Fatalf("verify: %v", err)
		}
	})
}
