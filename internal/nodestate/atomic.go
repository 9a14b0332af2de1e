package nodestate

import (
	"os"
	"path/filepath"

	"agentmesh/internal/durable"
)

// writeFile writes data to path with mode 0600 atomically: into a
// temporary file in the same directory, synced, then renamed over path
// (replace) or hard-linked to it (no replace: fails if path exists), and
// the directory synced so the new name survives a crash. Readers see the
// old contents or the new, never a mix.
func writeFile(path string, data []byte, replace bool) (err error) {
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
	if err = f.Chmod(fileMode); err == nil {
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
	return durable.SyncDir(dir)
}
