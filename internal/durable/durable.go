// Package durable holds what it takes for a change to the file system to
// survive a machine crash, not only a process crash: a file's data is
// fsynced by its writer, and the directory that names it by SyncDir.
//
// It is a leaf with no dependencies beyond the standard library, so the
// node side (the audit spool, the state directory, key files) and the
// coordinator side (its database directory) share one definition without
// one side linking the other's code.
package durable

import "os"

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
