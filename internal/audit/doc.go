// Package audit is the format of agentmesh's audit trail, shared by the
// nodes that record events and the coordinator that keeps them: typed
// events and their validation, the canonical encoding and the chain hash,
// the signed messages (checkpoints, prune points, receipts), receipts and
// the sender's check of one, the audit key's format, and the aggregation
// of refused attempts.
//
// Audit is not logging. An event is never dropped: a full queue makes the
// caller wait, a coordinator that is away makes the spool grow, and an event
// is removed from the spool only after the coordinator proved it kept it.
//
// # Two sides, one format
//
// The trail has a node side and a coordinator side, and neither links the
// other's code:
//
//   - spool (node side): a gateway's durable, append-only log of events
//     and Ship, which sends it to the coordinator batch by batch and
//     acknowledges a batch only after its receipt checks out.
//   - auditstore (coordinator side): the hash-chained store in the
//     coordinator's database with signed checkpoints, Ingest, Verify,
//     queries and pruning.
//
// Gateways, connectors and the node runtime import audit and spool only,
// never auditstore, so they do not link the database driver
// (TestNodeSideDoesNotLinkTheDatabase keeps it so). What both sides must
// agree on lives here: an event is encoded, hashed and signed one way.
//
// # Who may record what
//
// Only the node that made a decision may record it: a node ships only
// connection, request and session events whose Dst is itself, and the
// coordinator refuses a batch with anything else (auditstore.Ingest, reason
// ReasonForeignEvent). Event ids are namespaced by their recorder, so the
// store's uniqueness is (dst, id). The same (dst, id) with different content
// is kept and flagged as an integrity event (KindIntegrity, reason
// ReasonIDConflict, Detail a ConflictDetail), never dropped.
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
// up to every attempt. Gateways record through their spool, the
// coordinator through its store.
//
// A request event the policy decided carries a Basis: what that decision
// depended on beyond the event's other fields (the tags of both sides at
// the time, the argument values the policy's whens read, by the policy's
// own rule), so that `agentmesh policy replay` can make it again. It is
// part of the canonical encoding like every other field, and omitted when
// absent, so events recorded before it keep their bytes and still verify.
//
// # Hash chain and canonical encoding
//
// The canonical encoding of an event (Canonical) is encoding/json applied to
// the Event struct with Seq cleared and Time and First converted to UTC: fields in
// struct order, empty optional fields omitted, Time as RFC 3339 with
// nanoseconds and a "Z" suffix. Decoding canonical bytes and encoding the
// result again yields identical bytes; the tests check it. The spool
// stores these bytes, they travel to the coordinator, and the store keeps
// them as each row's body.
//
// The store numbers events 1, 2, 3, ... in the order it accepts them and
// computes (ChainHash)
//
//	hash(seq) = SHA-256("agentmesh audit chain v1\x00" || hash(seq-1) || uint64be(seq) || canonical)
//
// with hash(0) 32 zero bytes. Because seq and the previous hash are inside
// the hashed bytes, editing, deleting, inserting or reordering rows changes
// every following hash. A checkpoint is an ed25519 signature over
// ("agentmesh audit checkpoint v1\x00" || uint64be(seq) || hash(seq) ||
// int64be(unix nanoseconds)) (CheckpointMessage); a prune point and a
// receipt that binds a batch sign messages with their own prefixes, so no
// signed statement can be taken for another. The public key is
// distributed to nodes with the netmap (EncodePublicKey).
//
// # Receipts
//
// The coordinator answers every shipped batch with a Receipt: a signed
// head of the chain whose BatchCommit names, for each event sent, the seq
// that keeps its content, and a digest over those seqs and the SHA-256 of
// each event's canonical encoding. Receipt.CheckBatch is the sender's
// check, made before a batch is acknowledged: the signature holds with the
// audit key of the netmap, and the receipt binds exactly the events sent,
// in order. The gateway keeps the newest receipt in its state directory;
// given to auditstore.Verify it proves that the rows it covers still hold
// what was sent.
//
// # Threat model
//
// What this package decides for both sides: what a valid event is (a
// node's garbage is refused by Validate at the spool and again at the
// coordinator, and every field is bounded, MaxEventSize), that an event has
// exactly one encoding (so a hash or a receipt over it means one thing),
// and what a receipt proves. ParseReceipt and DecodeEvent read bytes from
// peers and files strictly (unknown fields and trailing data are errors)
// and are fuzzed. A receipt is only worth the key that checks it: the
// sender checks it with the audit key of its netmap, which came over the
// mTLS connection to the coordinator. Whoever holds the audit signing key
// can sign any history; the key stays with the coordinator.
//
// The threat models of the two sides are in their packages: the spool
// defends against crashes, not against whoever can write the gateway's
// state directory; the store defends against someone who can write the
// coordinator's database but does not hold the signing key.
package audit
