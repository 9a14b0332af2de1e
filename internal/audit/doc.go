// Package audit is agentmesh's audit trail: typed events, the local spool
// that gateways write before anything is acknowledged, shipping to the
// coordinator, the coordinator's hash-chained store with signed checkpoints,
// verification, retention and queries.
//
// Audit is not logging. An event is never dropped: a full queue makes the
// caller wait, a coordinator that is away makes the spool grow, and an event
// is removed from the spool only after the coordinator acknowledged it.
//
// # Flow
//
// A gateway opens a Spool in its state directory and calls Append for every
// decision. Ship reads the spool in batches and hands them to a Sender (the
// control client, over mTLS); a batch is acknowledged in the spool only after
// Send succeeded, which means the coordinator proved it kept every event as
// sent (Receipt.CheckBatch). The coordinator validates each received Event
// and calls (*Store).Ingest with the shipping node's identity; Ingest is
// idempotent by (dst, event id), so a batch re-sent after a lost
// acknowledgement or a gateway restart adds nothing. Admin actions at the
// coordinator are appended to the same Store.
//
// # Who may record what
//
// Only the node that made a decision may record it. Ingest accepts only
// connection, request and session events whose Dst is the shipping node
// (the coordinator also requires the node to be one that decides, a tool or
// model node); anything else refuses the whole batch (ForeignEventError).
// Event ids are namespaced by their recorder: the store's uniqueness is
// (dst, id), so no node can claim, ahead of it, an id another recorder will
// use. The same (dst, id) with identical canonical bytes is a re-sent event;
// with different bytes it is a security event: the stored event stays, and
// an integrity event (reason id_conflict, Detail a ConflictDetail) keeps the
// new content, both hashes and the shipper. Verify counts them.
//
// Every recorder stamps an event (Event.Stamp: version, id, time from its
// injected clock) before it writes it. Decision and Outcome are typed; the
// doc of Outcome lists each situation and the outcome every recorder gives
// it.
//
// Refused attempts (handshakes, admissions, joins) go through Refusals,
// which writes the first refusal of a (recorder, source, reason, kind) at
// once and aggregates the rest of its window into one event with Count and
// First, so a flood writes a bounded number of events while the counts add
// up to every attempt.
//
// # Spool guarantees
//
//   - Append validates and encodes the event in the caller's goroutine and
//     writes it to the active segment file before it returns (serialised
//     with other Appends; on Linux a copy into the segment's shared memory
//     mapping, whose blocks were allocated when the segment was created,
//     elsewhere one write call). From then on the event is in the kernel's
//     page cache: killing the gateway process, even with SIGKILL, loses
//     nothing that Append accepted. A slow disk makes Append wait; nothing is ever
//     dropped and there is no in-memory queue to lose.
//   - A syncer goroutine fsyncs what was written as soon as there is
//     something, then rests for SyncInterval (10 ms by default, never more
//     than 50 ms), so under load one fsync covers many events and a machine
//     crash loses at most the last interval. AppendSync returns only once the
//     event is fsynced; Flush returns once every event whose Append returned
//     before Flush was called is fsynced. Next hands out fsynced events only.
//   - If a write or fsync fails the spool stops: every waiting and later
//     call returns the error, so callers fail closed instead of serving
//     unaudited requests.
//
// The spool's on-disk format is a directory of append-only segment files of
// CRC-checked, length-prefixed records (the newest one, while open, padded
// with allocated zeros that are cut off when it is closed, and that read
// as a torn tail after a crash), and an ack file replaced atomically
// (write, fsync, rename, fsync directory). The ack file is rewritten only
// when a whole segment becomes acknowledged (just before the segment is
// deleted) and at Close, not after every shipped batch: after a crash the
// acknowledged events of the current segment are shipped again, and the
// coordinator finds them stored already, identical, and adds nothing. A
// torn record at the end of the newest segment (a crash during a write that
// was never reported durable) is cut off when the spool is opened; a bad
// record anywhere else is reported as ErrCorrupt rather than skipped.
//
// # Hash chain and canonical encoding
//
// The canonical encoding of an event (Canonical) is encoding/json applied to
// the Event struct with Seq cleared and Time and First converted to UTC: fields in
// struct order, empty optional fields omitted, Time as RFC 3339 with
// nanoseconds and a "Z" suffix. Decoding canonical bytes and encoding the
// result again yields identical bytes; the tests check it.
//
// The store numbers events 1, 2, 3, ... in the order it accepts them and
// computes
//
//	hash(seq) = SHA-256("agentmesh audit chain v1\x00" || hash(seq-1) || uint64be(seq) || canonical)
//
// with hash(0) 32 zero bytes. Because seq and the previous hash are inside
// the hashed bytes, editing, deleting, inserting or reordering rows changes
// every following hash. A checkpoint is an ed25519 signature over
// ("agentmesh audit checkpoint v1\x00" || uint64be(seq) || hash(seq) ||
// int64be(unix nanoseconds)); the public key is distributed to nodes with the
// CA bundle (EncodePublicKey).
//
// # Threat model
//
// The store defends against someone who can read and write the coordinator's
// database file but does not hold the audit signing key: a compromised
// backup, an operator editing rows to hide an action, a restore of an older
// copy. Verify recomputes the chain and checks every checkpoint signature, so
// any change to a row covered by a checkpoint is reported with the first
// broken seq and id. The database alone has a limit: rows after the newest
// stored checkpoint are only chained, not signed, so an attacker who
// deletes the newest rows together with the checkpoints covering them, or
// who appends forged rows at the end, is not detected by it. Receipts close
// most of that gap: the coordinator answers every shipped batch with a
// signed head (IngestResult.Receipt), the gateway keeps the newest one in its
// state directory, and Verify given those receipts reports any deleted
// event a receipt covers. What no receipt covers yet (the last batch, admin
// actions since) remains bounded by checkpoint frequency
// (StoreOptions.CheckpointEvery and CheckpointEvents). Someone who holds the
// signing key can rewrite history; protect the key file like the CA key.
//
// Pruning deletes old events only up to a signed checkpoint and records a
// signed prune point, so Verify starts from a signed position and pruning
// cannot be used to hide tampering. Deleting the prune point is detected as
// missing rows.
//
// The spool defends against crashes, not against local attackers: whoever
// can write the gateway's state directory can already act as the gateway.
// Its CRCs detect torn writes and media errors, not deliberate edits; the
// coordinator's validation (Event.Validate) rejects garbage.
package audit
