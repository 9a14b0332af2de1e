package spool

import "errors"

var (
	// ErrClosed is returned by a Spool after Close.
	ErrClosed = errors.New("audit spool closed")

	// ErrCorrupt is returned when the spool's files are damaged in a way
	// that a crash cannot explain, such as a bad record before the end of
	// a segment or an ack pointer beyond the data.
	ErrCorrupt = errors.New("audit spool corrupt")

	// ErrAckMismatch is returned by (*Spool).Ack for a batch that does not
	// start at or before the current ack pointer, or that is not from this
	// spool.
	ErrAckMismatch = errors.New("audit ack does not match the spool")
)
