package spool

import (
	"fmt"
	"os"
	"runtime/debug"
)

// activeFile is the newest segment, open for appending. Where the platform
// allows (mapFile), the segment's blocks are allocated up front and mapped
// into memory, so that appending a record is a copy into the kernel's page
// cache rather than a write system call: the bytes are just as safe from a
// crash of the process (the page cache is the kernel's), the syncer's fsync
// makes them durable as before, and a gateway request pays about a tenth of
// the cost. Elsewhere, and for a record that does not fit the mapping, it
// writes with pwrite.
//
// A finished or closed active file is truncated to the records it holds,
// so every file but a crashed newest one ends at its last record; the zeros
// after the last record of a crashed one read as a torn tail, which
// recovery cuts off.
type activeFile struct {
	f    *os.File
	m    []byte // the mapping, or nil
	size int64  // bytes of records written
}

// newActive makes f, a segment opened read-write that holds size bytes of
// records, the active file, reserving room for prealloc bytes in all.
func newActive(f *os.File, size, prealloc int64) *activeFile {
	a := &activeFile{f: f, size: size}
	if prealloc > size {
		// Failing to map is not an error: appends then use pwrite.
		a.m, _ = mapFile(f, prealloc)
	}
	return a
}

// append writes rec after the records written so far.
func (a *activeFile) append(rec []byte) error {
	end := a.size + int64(len(rec))
	if a.m != nil && end <= int64(len(a.m)) {
		if err := copyNoFault(a.m[a.size:end], rec); err != nil {
			return err
		}
	} else if _, err := a.f.WriteAt(rec, a.size); err != nil {
		// A partial record left by a failure is a torn tail that the next
		// Open cuts off.
		return err
	}
	a.size = end
	return nil
}

// copyNoFault copies src into the mapped dst, turning a fault on the
// mapping (the file shrank under it, the device failed) into an error
// instead of a crash, so that the spool stops and callers fail closed.
func copyNoFault(dst, src []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("write to the mapped segment faulted: %v", r)
		}
	}()
	copy(dst, src)
	return nil
}

// sync makes every record written so far durable. fsync covers the pages
// written through the mapping.
func (a *activeFile) sync() error { return a.f.Sync() }

// close unmaps the file, cuts it to the records it holds, syncs and closes
// it.
func (a *activeFile) close() error {
	var errs []error
	if a.m != nil {
		errs = append(errs, unmapFile(a.m))
		a.m = nil
		if err := a.f.Truncate(a.size); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, a.f.Sync())
		}
	}
	errs = append(errs, a.f.Close())
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
