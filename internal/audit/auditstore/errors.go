package auditstore

import "errors"

var (
	// ErrCorrupt is returned when the stored trail is damaged in a way
	// that no write of the store explains, such as a chain head whose hash
	// has the wrong size or a stored event that does not decode.
	ErrCorrupt = errors.New("audit trail corrupt")

	// ErrBadFilter is returned by Query for a filter it cannot evaluate,
	// such as a tag selector (tags are not recorded in events).
	ErrBadFilter = errors.New("bad audit filter")

	// ErrForeignEvent is wrapped by ForeignEventError: a node shipped an
	// event it did not decide.
	ErrForeignEvent = errors.New("foreign audit event")
)
