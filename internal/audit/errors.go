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

	// ErrBadKey is returned for a signing or verification key that is not
	// ed25519.
	ErrBadKey = errors.New("audit key is not ed25519")
)
