//go:build !unix

package loopback

import (
	"errors"
	"io/fs"
)

// ownedBySelf cannot check ownership here: Unix socket endpoints are
// refused, so that file permissions are never assumed to protect one.
func ownedBySelf(fs.FileInfo) error {
	return errors.New("unix socket endpoints are supported on Unix systems only")
}
