// Package auditstore is the coordinator side of the audit trail: the
// hash chain of events in the coordinator's SQLite database with signed
// checkpoints (Store), the ingest of batches that nodes ship, receipts,
// verification (Verify), queries and retention (Prune). Events, their
// canonical encoding, the chain hash and the receipt format come from
// package audit; nodes never import this package.
//
// # Ingest
//
// The coordinator validates each received event and calls Store.Ingest
// with the shipping node's identity. Only the node that made a decision
// may record it: Ingest accepts only connection, request and session
// events whose Dst is the shipping node (the coordinator also requires the
// node to be one that decides, a tool or model node); anything else
// refuses the whole batch (ForeignEventError). The store's uniqueness is
// (dst, id), so no node can claim, ahead of it, an id another recorder
// will use. The same (dst, id) with identical canonical bytes is a re-sent
// event and adds nothing; with different bytes it is a security event: the
// stored event stays, and an integrity event (reason id_conflict, Detail
// an audit.ConflictDetail) keeps the new content, both hashes and the
// shipper. Every ingested batch is answered with a receipt bound to its
// content. Admin actions at the coordinator are appended to the same
// Store (Append).
//
// The store chains events as package audit describes (audit.ChainHash),
// signs a checkpoint every CheckpointEvery and every CheckpointEvents
// events, and answers a bare signed head on request (Store.Receipt).
//
// # Threat model
//
// The store defends against someone who can read and write the coordinator's
// database file but does not hold the audit signing key: a compromised
// backup, an operator editing rows to hide an action, a restore of an older
// copy. Verify recomputes the chain and checks every checkpoint signature, so
// any change to a row covered by a checkpoint is reported with the first
// broken seq and id; it also checks that the columns queries filter on
// agree with the hashed body. The database alone has a limit: rows after
// the newest stored checkpoint are only chained, not signed, so an
// attacker who deletes the newest rows together with the checkpoints
// covering them, or who appends forged rows at the end, is not detected by
// it. Receipts close most of that gap: the coordinator answers every
// shipped batch with a signed head (IngestResult.Receipt), the gateway
// keeps the newest one in its state directory, and Verify given those
// receipts reports any deleted event a receipt covers and any row of a
// receipt's batch that no longer holds what was sent. What no receipt
// covers yet (the last batch, admin actions since) remains bounded by
// checkpoint frequency (Options.CheckpointEvery and CheckpointEvents).
// Someone who holds the signing key can rewrite history; protect the key
// file like the CA key.
//
// Pruning deletes old events only up to a signed checkpoint and records a
// signed prune point, so Verify starts from a signed position and pruning
// cannot be used to hide tampering. Deleting the prune point is detected as
// missing rows.
//
// Queries read the stored bodies; a body that does not decode is reported
// as ErrCorrupt, never skipped.
package auditstore
