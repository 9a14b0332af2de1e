package pki

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"agentmesh/internal/durable"
)

// writeFileExclusive writes data to path with mode perm atomically and
// refuses to replace an existing file: the data goes to a temporary file in
// the same directory, is synced, then hard-linked to its final name (which
// fails if the name exists), and the directory is synced. A crash leaves
// either no file or the complete file, never a torn one.
func writeFileExclusive(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		// The temporary name is always removed: after a successful link the
		// final name keeps the data.
		if rerr := os.Remove(tmp); rerr != nil && err == nil && !os.IsNotExist(rerr) {
			err = rerr
		}
	}()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

// checkKeyMode refuses a private key file that group or others can read or
// write, saying how to fix it.
func checkKeyMode(path string, fi fs.FileInfo) error {
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %#o; run chmod 600 %s", ErrKeyPermissions, path, mode, path)
	}
	return nil
}
