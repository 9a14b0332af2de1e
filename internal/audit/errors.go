package audit

import "errors"

var (
	// ErrInvalidEvent is returned (wrapped, with the reason) for an event
	// that fails validation: unknown kind, malformed id, missing time,
	// oversized, and so on.
	ErrInvalidEvent = errors.New("invalid audit event")

	// ErrNotKept is returned by Receipt.CheckBatch (and by senders, so
	// that shipping keeps the batch) when the coordinator's answer does
	// not show that it kept exactly the events sent.
	ErrNotKept = errors.New("the coordinator did not keep the batch as sent")

	// ErrBadReceipt is returned by ParseReceipt for a malformed receipt.
	ErrBadReceipt = errors.New("malformed audit receipt")

	// ErrBadKey is returned for a signing or verification key that is not
	// ed25519.
	ErrBadKey = errors.New("audit key is not ed25519")
)
