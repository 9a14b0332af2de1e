package pki

import (
	"fmt"
	"io/fs"
)

// checkKeyMode refuses a private key file that group or others can read or
// write, saying how to fix it.
func checkKeyMode(path string, fi fs.FileInfo) error {
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %#o; run chmod 600 %s", ErrKeyPermissions, path, mode, path)
	}
	return nil
}
