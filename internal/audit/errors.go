package audit

import "errors"

var (
	// ErrInvalidEvent is returned (wrapped, with the reason) for an event
	// that fails validation: unknown kind, malformed id, missing time,
	// oversized, and so on.
	ErrInvalidEvent = errors.New("invalid audit event")

	// ErrClosed is returned by a Spool after Close.
	ErrClosed = errors.New("audit spool closed")

	// ErrCorrupt is returned when stored audit data is damaged in a way that
	// a crash cannot explain, such as a bad record before the end of a
	// segment or an ack pointer beyond the data.
	ErrCorrupt = errors.New("audit data corrupt")

	// ErrAckMismatch is returned by (*Spool).Ack for a batch that does not
	// start at or before the current ack pointer, or that is not from this
	// spool.
	ErrAckMismatch = errors.New("audit ack does not match the spool")

	// ErrBadFilter is returned by Query for a filter it cannot evaluate,
	// such as a tag selector (tags are not recorded in events).
	ErrBadFilter = errors.New("bad audit filter")

	// ErrForeignEvent is wrapped by ForeignEventError: a node shipped an
	// event it did not decide.
	ErrForeignEvent = errors.New("foreign audit event")

	// ErrNotKept is returned by Receipt.CheckBatch (and by senders, so
	// that Ship keeps the batch) when the coordinator's answer does not
	// show that it kept exactly the events sent.
	ErrNotKept = errors.New("the coordinator did not keep the batch as sent")

	// ErrBadReceipt is returned by ParseReceipt for a malformed receipt.
	ErrBadReceipt = errors.New("malformed audit receipt")

	// ErrBadKey is returned for a signing or verification key that is not
	// ed25519.
	ErrBadKey = errors.New("audit key is not ed25519")
)
