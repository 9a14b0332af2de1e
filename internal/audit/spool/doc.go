// Package spool is the node side of the audit trail: a gateway's durable,
// append-only log of audit events (Spool) and the shipping of it to the
// coordinator (Ship). It never links the coordinator's database; events,
// their encoding and receipts come from package audit.
//
// # Flow
//
// A gateway opens a Spool in its state directory and calls Append for every
// decision. Ship reads the spool in batches and hands them to a Sender (the
// control client, over mTLS); a batch is acknowledged in the spool only after
// Send succeeded, which means the coordinator proved it kept every event as
// sent (audit.Receipt.CheckBatch). The coordinator is idempotent by (dst,
// event id), so a batch re-sent after a lost acknowledgement or a gateway
// restart adds nothing there.
//
// # Guarantees
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
//   - Ship retries a failed send for as long as it takes, with exponential
//     backoff and jitter, and never skips an event. An answer that does not
//     prove the batch was kept (audit.ErrNotKept) is logged loudly and the
//     batch stays.
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
// # Threat model
//
// The spool defends against crashes, not against local attackers: whoever
// can write the gateway's state directory can already act as the gateway.
// Its CRCs detect torn writes and media errors, not deliberate edits; the
// coordinator's validation (audit.Event.Validate) rejects garbage, and the
// coordinator accepts from a node only events that node decided. What the
// spool guards is completeness against the coordinator: an event leaves it
// only once a receipt signed with the netmap's audit key binds it, so a
// coordinator (or anything between) that drops, alters or reorders events
// makes the gateway keep and resend them rather than forget them.
package spool
