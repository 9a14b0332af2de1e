// Package durable holds what it takes for a change to the file system to
// survive a machine crash, not only a process crash: a file's data is
// fsynced by its writer, and the directory that names it by SyncDir.
//
// It is a leaf with no dependencies beyond the standard library, so the
// node side (the audit spool, the state directory, key files) and the
// coordinator side (its database directory) share one definition without
// one side linking the other's code.
package durable

import (
	"os"
	"path/filepath"
)

// SyncDir fsyncs a directory, so that a file created, renamed or removed in
// it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFile writes data to path so that a crash leaves either the old
// state or the complete new file, never a torn one: the data goes to a
// temporary file in the same directory with mode perm, is fsynced, and is
// then renamed over path (replace) or linked to it, failing if path
// exists (!replace); finally the directory is synced. The temporary name
// never survives the call.
func WriteFile(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		// After a rename the temporary name is gone; after a link or a
		// failure it is removed here.
		if rerr := os.Remove(tmp); rerr != nil && !os.IsNotExist(rerr) && err == nil {
			err = rerr
		}
	}()
	if err = f.Chmod(perm); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return err
	}
	return SyncDir(dir)
}
