package auditstore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/store"
)

// migrations are the audit store's schema steps (owner "audit").
//
// audit_events keeps each event's canonical encoding in body (exactly the
// bytes the chain hashes) and copies the fields queries filter on into
// indexed columns; Verify checks that the copies agree with body. src_sel
// and dst_sel hold the short selector form ("agent:NAME") of a SPIFFE ID so
// that selector filters use an index.
//
// Version 2 makes an event unique by (dst, id) instead of id: ids are
// namespaced by the node that recorded the event, so no node can claim an
// id another recorder will use (a denial answer tells the caller its event
// id). SQLite cannot drop a constraint, so the table is rebuilt; bodies,
// seqs and hashes are copied unchanged, so the chain is untouched.
var migrations = []store.Migration{
	{Version: 1, SQL: `
CREATE TABLE audit_events (
	seq      INTEGER PRIMARY KEY,
	id       TEXT    NOT NULL UNIQUE,
	time_ns  INTEGER NOT NULL,
	kind     TEXT    NOT NULL,
	src      TEXT    NOT NULL,
	src_sel  TEXT    NOT NULL,
	dst      TEXT    NOT NULL,
	dst_sel  TEXT    NOT NULL,
	method   TEXT    NOT NULL,
	tool     TEXT    NOT NULL,
	decision TEXT    NOT NULL,
	body     BLOB    NOT NULL,
	hash     BLOB    NOT NULL
);
CREATE INDEX audit_events_time ON audit_events(time_ns);
CREATE INDEX audit_events_src ON audit_events(src_sel);
CREATE INDEX audit_events_dst ON audit_events(dst_sel);
CREATE INDEX audit_events_tool ON audit_events(tool);
CREATE TABLE audit_checkpoints (
	id      INTEGER PRIMARY KEY,
	seq     INTEGER NOT NULL,
	head    BLOB    NOT NULL,
	time_ns INTEGER NOT NULL,
	sig     BLOB    NOT NULL
);
CREATE INDEX audit_checkpoints_seq ON audit_checkpoints(seq);
CREATE TABLE audit_prune (
	id        INTEGER PRIMARY KEY CHECK (id = 1),
	seq       INTEGER NOT NULL,
	head      BLOB    NOT NULL,
	before_ns INTEGER NOT NULL,
	time_ns   INTEGER NOT NULL,
	sig       BLOB    NOT NULL
);
`},
	{Version: 2, SQL: `
CREATE TABLE audit_events_v2 (
	seq      INTEGER PRIMARY KEY,
	id       TEXT    NOT NULL,
	time_ns  INTEGER NOT NULL,
	kind     TEXT    NOT NULL,
	src      TEXT    NOT NULL,
	src_sel  TEXT    NOT NULL,
	dst      TEXT    NOT NULL,
	dst_sel  TEXT    NOT NULL,
	method   TEXT    NOT NULL,
	tool     TEXT    NOT NULL,
	decision TEXT    NOT NULL,
	body     BLOB    NOT NULL,
	hash     BLOB    NOT NULL,
	UNIQUE (dst, id)
);
INSERT INTO audit_events_v2 (seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash)
	SELECT seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v2 RENAME TO audit_events;
CREATE INDEX audit_events_time ON audit_events(time_ns);
CREATE INDEX audit_events_src ON audit_events(src_sel);
CREATE INDEX audit_events_dst ON audit_events(dst_sel);
CREATE INDEX audit_events_tool ON audit_events(tool);
`},
}

const insertEvent = `INSERT INTO audit_events
	(seq, id, time_ns, kind, src, src_sel, dst, dst_sel, method, tool, decision, body, hash)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT(dst, id) DO NOTHING`

// Options configures a Store. The zero value is usable.
type Options struct {
	// CheckpointEvery is how often Run signs a checkpoint (when events
	// were added since the last one). Zero means one minute.
	CheckpointEvery time.Duration
	// CheckpointEvents makes Append sign a checkpoint once this many
	// events were added since the last one, bounding the unsigned tail.
	// Zero means 10,000; negative disables it.
	CheckpointEvents int64
	// Now returns the current time for checkpoints and prune points; nil
	// means time.Now.
	Now func() time.Time
	// After returns a channel that fires after d (nil means time.After);
	// Run uses it to schedule checkpoints.
	After func(d time.Duration) <-chan time.Time
	// Logger receives failed periodic checkpoints; nil discards.
	Logger *slog.Logger
	// Self is the identity of the store's owner (the coordinator's SPIFFE
	// ID), written as the destination of the integrity events the store
	// records itself.
	Self string
}

// Store is the coordinator's audit trail: a hash chain of events in SQLite
// with signed checkpoints. Its methods are safe for concurrent use; the
// Store must be the only writer of its tables.
type Store struct {
	db     *sql.DB
	signer crypto.Signer
	pub    ed25519.PublicKey
	opts   Options
	log    *slog.Logger

	mu      sync.Mutex // serialises writers and guards the head below
	seq     int64      // seq of the newest event (or of the prune point)
	head    audit.Hash // its chain hash
	ckptSeq int64      // seq of the newest checkpoint
	stale   bool       // a write failed: reload the head before the next one
	// appended is closed (and replaced) whenever an Append stored events.
	appended chan struct{}
}

// New applies the audit schema to db and returns a Store that signs
// checkpoints with signer, whose public key must be ed25519
// (ed25519.PrivateKey is a crypto.Signer).
func New(ctx context.Context, db *sql.DB, signer crypto.Signer, opts Options) (*Store, error) {
	if signer == nil {
		return nil, fmt.Errorf("audit: new store: %w: no signer", audit.ErrBadKey)
	}
	pub, ok := signer.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit: new store: %w", audit.ErrBadKey)
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = time.Minute
	}
	if opts.CheckpointEvents == 0 {
		opts.CheckpointEvents = 10_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	s := &Store{db: db, signer: signer, pub: pub, opts: opts, log: opts.Logger, appended: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := store.Migrate(ctx, db, "audit", migrations); err != nil {
		return nil, fmt.Errorf("audit: new store: %w", err)
	}
	if err := s.loadHead(ctx); err != nil {
		return nil, fmt.Errorf("audit: new store: %w", err)
	}
	return s, nil
}

// loadHead reads the chain head: the newest event, or the prune point when
// every event was pruned. s.mu must be held (or s unpublished).
func (s *Store) loadHead(ctx context.Context) error {
	s.seq, s.head, s.ckptSeq = 0, audit.Hash{}, 0
	var hash []byte
	err := s.db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1`).Scan(&s.seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		err = s.db.QueryRowContext(ctx, `SELECT seq, head FROM audit_prune WHERE id = 1`).Scan(&s.seq, &hash)
		if errors.Is(err, sql.ErrNoRows) {
			s.seq, hash, err = 0, make([]byte, audit.HashSize), nil
		}
	}
	if err != nil {
		return fmt.Errorf("load chain head: %w", err)
	}
	if len(hash) != audit.HashSize {
		return fmt.Errorf("load chain head: %w: hash of seq %d has %d bytes", ErrCorrupt, s.seq, len(hash))
	}
	copy(s.head[:], hash)
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM audit_checkpoints`).Scan(&s.ckptSeq); err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	s.stale = false
	return nil
}

// PublicKey returns the key that verifies this store's checkpoints.
func (s *Store) PublicKey() ed25519.PublicKey { return s.pub }

// Head returns the seq and hash of the newest event in the chain.
func (s *Store) Head() (int64, audit.Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq, s.head
}

// encodedEvent is an event ready to insert.
type encodedEvent struct {
	e         *audit.Event
	canonical []byte
}

// Append validates events recorded here (by the store's owner) and stores
// them in one transaction, each with the next seq and its chain hash; see
// Ingest for what happens to an event whose (dst, id) is already stored.
// It returns how many events were added. Any invalid event rejects the
// whole batch.
func (s *Store) Append(ctx context.Context, events []audit.Event) (int, error) {
	r, err := s.append(ctx, s.opts.Self, events, false)
	return r.Added, err
}

// Ingest stores a batch that the node from (its SPIFFE ID) shipped, after
// checking that the node may record every event of it: only the node that
// made a decision may record it, so each event must be of a kind nodes
// record (connection, request, session) and name from as its destination.
// A foreign event refuses the whole batch with a *ForeignEventError. (Which
// nodes may ship at all is the caller's decision.)
//
// An event whose (dst, id) is already stored with identical canonical
// content is a re-sent event and adds nothing. With different content it is
// a security event, never a silent drop: the stored event stays, and an
// integrity event (reason id_conflict, see ConflictDetail) recorded in the
// same transaction keeps the new content. The result accounts for every
// event of the batch and carries a receipt that binds the batch's content.
func (s *Store) Ingest(ctx context.Context, from string, events []audit.Event) (IngestResult, error) {
	for i := range events {
		e := &events[i]
		switch {
		case e.Kind != audit.KindConnection && e.Kind != audit.KindRequest && e.Kind != audit.KindSession:
			return IngestResult{}, &ForeignEventError{Index: i, ID: e.ID, Why: fmt.Sprintf("kind %.40q is not one nodes record", e.Kind)}
		case e.Dst != from:
			return IngestResult{}, &ForeignEventError{Index: i, ID: e.ID, Why: fmt.Sprintf("destination %.200q is not the shipping node", e.Dst)}
		}
	}
	return s.append(ctx, from, events, true)
}

// IngestResult accounts for every event of a batch given to Ingest.
type IngestResult struct {
	// Added is how many events were stored as new.
	Added int
	// Duplicates is how many were stored already with identical content.
	Duplicates int
	// Conflicts are the events whose (dst, id) was stored with other
	// content; each one's content is kept in an integrity event.
	Conflicts []audit.Conflict
	// Seqs holds, for each event of the batch in order, the seq at which
	// its content is kept: its new row, the identical row stored before,
	// or the integrity event that keeps a conflicting one.
	Seqs []int64
	// Receipt is the signed head after the batch, bound to its content
	// (audit.Receipt.Batch); zero only for an empty batch.
	Receipt audit.Receipt
}

// ForeignEventError refuses a batch with an event the shipping node may
// not record. It wraps ErrForeignEvent.
type ForeignEventError struct {
	Index int
	ID    string
	Why   string
}

func (e *ForeignEventError) Error() string {
	return fmt.Sprintf("event %d (%.40s): %s: a node may only record its own decisions", e.Index, e.ID, e.Why)
}

func (e *ForeignEventError) Unwrap() error { return ErrForeignEvent }

// append validates and stores events shipped by from (the store's owner
// for Append), signing a receipt for the batch when receipt is set.
func (s *Store) append(ctx context.Context, from string, events []audit.Event, receipt bool) (IngestResult, error) {
	if len(events) == 0 {
		return IngestResult{}, nil
	}
	enc := make([]encodedEvent, len(events))
	for i := range events {
		e := &events[i]
		c, err := audit.AppendValid(make([]byte, 0, 512), e)
		if err != nil {
			return IngestResult{}, fmt.Errorf("audit: append: event %d: %w", i, err)
		}
		enc[i] = encodedEvent{e: e, canonical: c}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale {
		if err := s.loadHead(ctx); err != nil {
			return IngestResult{}, fmt.Errorf("audit: append: %w", err)
		}
	}
	r, err := s.insert(ctx, from, enc)
	if err != nil {
		s.stale = true
		return IngestResult{}, fmt.Errorf("audit: append: %w", err)
	}
	if n := s.opts.CheckpointEvents; n > 0 && s.seq-s.ckptSeq >= n {
		if err := s.checkpointLocked(ctx); err != nil {
			// The events are stored; the next checkpoint covers them.
			s.log.Warn("audit: checkpoint after append", "err", err)
		}
	}
	if receipt {
		hashes := make([]audit.Hash, len(enc))
		for i, x := range enc {
			hashes[i] = sha256.Sum256(x.canonical)
		}
		if r.Receipt, err = s.signLocked(audit.NewBatchCommit(r.Seqs, hashes)); err != nil {
			// The events are stored; the sender sees no receipt and
			// sends the batch again, which adds nothing.
			return r, fmt.Errorf("audit: append: %w", err)
		}
	}
	return r, nil
}

// insert runs the append transaction and advances the head on commit.
// s.mu must be held.
func (s *Store) insert(ctx context.Context, from string, enc []encodedEvent) (IngestResult, error) {
	r := IngestResult{Seqs: make([]int64, len(enc))}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return r, err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, insertEvent)
	if err != nil {
		return r, err
	}
	defer stmt.Close()
	seq, head := s.seq, s.head
	// put chains one event; it reports false when (dst, id) is taken.
	put := func(e *audit.Event, canonical []byte) (bool, error) {
		next := seq + 1
		h := audit.ChainHash(head, next, canonical)
		res, err := stmt.ExecContext(ctx, next, e.ID, e.Time.UnixNano(), string(e.Kind),
			e.Src, selectorOf(e.Src), e.Dst, selectorOf(e.Dst), e.Method, e.Tool, e.Decision,
			canonical, h[:])
		if err != nil {
			return false, fmt.Errorf("insert %s: %w", e.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("insert %s: %w", e.ID, err)
		}
		if n == 1 {
			seq, head = next, h
		}
		return n == 1, nil
	}
	for i, x := range enc {
		ok, err := put(x.e, x.canonical)
		if err != nil {
			return r, err
		}
		if ok {
			r.Seqs[i] = seq
			r.Added++
			continue
		}
		var oldSeq int64
		var oldBody []byte
		if err := tx.QueryRowContext(ctx, `SELECT seq, body FROM audit_events WHERE dst = ? AND id = ?`,
			x.e.Dst, x.e.ID).Scan(&oldSeq, &oldBody); err != nil {
			return r, fmt.Errorf("look up %s: %w", x.e.ID, err)
		}
		if bytes.Equal(oldBody, x.canonical) {
			r.Seqs[i] = oldSeq
			r.Duplicates++
			continue
		}
		ie, ic, err := s.conflictEvent(from, x, oldSeq, oldBody)
		if err != nil {
			return r, err
		}
		if ok, err := put(ie, ic); err != nil || !ok {
			return r, fmt.Errorf("record id conflict of %s: %w", x.e.ID, errors.Join(err, errors.New("integrity event id taken")))
		}
		r.Seqs[i] = seq
		r.Conflicts = append(r.Conflicts, audit.Conflict{Index: i, ID: x.e.ID, StoredSeq: oldSeq, Seq: seq})
	}
	if err := tx.Commit(); err != nil {
		return r, err
	}
	s.seq, s.head = seq, head
	if r.Added > 0 || len(r.Conflicts) > 0 {
		close(s.appended)
		s.appended = make(chan struct{})
	}
	return r, nil
}

// conflictEvent builds the integrity event that keeps x, which from shipped
// under the (dst, id) of the event stored at oldSeq with oldBody.
func (s *Store) conflictEvent(from string, x encodedEvent, oldSeq int64, oldBody []byte) (*audit.Event, []byte, error) {
	oldSum, newSum := sha256.Sum256(oldBody), sha256.Sum256(x.canonical)
	detail, err := json.Marshal(audit.ConflictDetail{
		ID: x.e.ID, Dst: x.e.Dst, StoredSeq: oldSeq,
		StoredSHA256: hex.EncodeToString(oldSum[:]), RejectedSHA256: hex.EncodeToString(newSum[:]),
		Rejected: x.canonical,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("record id conflict of %s: %w", x.e.ID, err)
	}
	e := &audit.Event{
		Kind: audit.KindIntegrity, Src: from, Dst: s.opts.Self, Action: "audit.ingest", Target: x.e.ID,
		Decision: audit.Deny, Reason: audit.ReasonIDConflict, Detail: string(detail),
	}
	e.Stamp(s.opts.Now())
	c, err := audit.AppendValid(make([]byte, 0, 512), e)
	if err != nil {
		return nil, nil, fmt.Errorf("record id conflict of %s: %w", x.e.ID, err)
	}
	return e, c, nil
}

// Receipt signs the store's current head, without binding a batch. It
// stores nothing. A store without events yields the zero Receipt.
func (s *Store) Receipt(ctx context.Context) (audit.Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale {
		if err := s.loadHead(ctx); err != nil {
			return audit.Receipt{}, fmt.Errorf("audit: receipt: %w", err)
		}
	}
	r, err := s.signLocked(nil)
	if err != nil {
		return audit.Receipt{}, fmt.Errorf("audit: receipt: %w", err)
	}
	return r, nil
}

// signLocked signs the current head and batch (nil: none). s.mu must be
// held.
func (s *Store) signLocked(batch *audit.BatchCommit) (audit.Receipt, error) {
	if s.seq == 0 {
		return audit.Receipt{}, nil
	}
	return audit.SignReceipt(s.signer, s.seq, s.head, s.opts.Now(), batch)
}

// Appended returns a channel that is closed the next time an Append stores
// at least one event, for callers that wait for events to arrive instead
// of polling.
func (s *Store) Appended() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appended
}

// Checkpoint signs the current head (seq, hash, time) and stores the
// signature. It does nothing when no event was added since the last one.
func (s *Store) Checkpoint(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale {
		if err := s.loadHead(ctx); err != nil {
			return fmt.Errorf("audit: checkpoint: %w", err)
		}
	}
	return s.checkpointLocked(ctx)
}

func (s *Store) checkpointLocked(ctx context.Context) error {
	if s.seq == 0 || s.seq == s.ckptSeq {
		return nil
	}
	at := s.opts.Now().UnixNano()
	sig, err := s.signer.Sign(rand.Reader, audit.CheckpointMessage(s.seq, s.head, at), crypto.Hash(0))
	if err != nil {
		return fmt.Errorf("audit: checkpoint: sign: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO audit_checkpoints (seq, head, time_ns, sig) VALUES (?, ?, ?, ?)`,
		s.seq, s.head[:], at, sig); err != nil {
		return fmt.Errorf("audit: checkpoint: %w", err)
	}
	s.ckptSeq = s.seq
	return nil
}

// Run signs a checkpoint every CheckpointEvery until ctx is done, then
// signs a last one. It returns ctx's error, joined with the last
// checkpoint's error if that failed. Failed periodic checkpoints are
// logged and retried at the next interval.
func (s *Store) Run(ctx context.Context) error {
	for {
		select {
		case <-s.opts.After(s.opts.CheckpointEvery):
			if err := s.Checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("audit: periodic checkpoint", "err", err)
			}
		case <-ctx.Done():
			return errors.Join(ctx.Err(), s.Checkpoint(context.WithoutCancel(ctx)))
		}
	}
}

// Prune deletes events up to the newest signed checkpoint that lies before
// the first event at or after before, so that what remains starts at a
// signed position. It refuses to prune a trail that fails Verify, since
// pruning would destroy the evidence. It records a signed prune point that
// Verify starts from, deletes the checkpoints before it, and returns how
// many events it deleted (0 when no checkpoint allows pruning).
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep, err := Verify(ctx, s.db, s.pub)
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if !rep.OK {
		return 0, fmt.Errorf("audit: prune: %w: refusing to prune a trail that fails verification: %s", ErrCorrupt, rep)
	}
	beforeNS := before.UnixNano()
	var firstKeep int64
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(min(seq), ?) FROM audit_events WHERE time_ns >= ?`,
		s.seq+1, beforeNS).Scan(&firstKeep); err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	var cpSeq int64
	var cpHead []byte
	err = s.db.QueryRowContext(ctx, `SELECT seq, head FROM audit_checkpoints WHERE seq < ? AND seq > ?
		ORDER BY seq DESC, id DESC LIMIT 1`, firstKeep, rep.PrunedThrough).Scan(&cpSeq, &cpHead)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	var head audit.Hash
	copy(head[:], cpHead)
	sig, err := s.signer.Sign(rand.Reader, audit.PruneMessage(cpSeq, head, beforeNS), crypto.Hash(0))
	if err != nil {
		return 0, fmt.Errorf("audit: prune: sign: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM audit_events WHERE seq <= ?`, cpSeq)
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	deleted, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_checkpoints WHERE seq < ?`, cpSeq); err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_prune (id, seq, head, before_ns, time_ns, sig) VALUES (1, ?, ?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, head = excluded.head, before_ns = excluded.before_ns,
		time_ns = excluded.time_ns, sig = excluded.sig`,
		cpSeq, head[:], beforeNS, s.opts.Now().UnixNano(), sig); err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	return deleted, nil
}
