package nodestate

import (
	"errors"
	"io/fs"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrNotExist: the state directory or one of its files does not exist.
	// Errors matching it also match fs.ErrNotExist.
	ErrNotExist = errors.New("node state does not exist")
	// ErrPermissions: the directory or the key file is open to other users.
	ErrPermissions = errors.New("unsafe permissions on node state")
	// ErrInvalid: a state file exists but its contents are unusable.
	ErrInvalid = errors.New("invalid node state")
)

// missingError says which file is missing and what to do about it.
type missingError struct {
	path, hint string
}

func (e *missingError) Error() string { return e.path + " does not exist; " + e.hint }

// Is makes a missing file match both ErrNotExist and fs.ErrNotExist, so
// callers may use either.
func (e *missingError) Is(target error) bool {
	return target == ErrNotExist || target == fs.ErrNotExist
}
