//go:build linux

package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// mapFile allocates the blocks of f up to size (so that a write through the
// mapping can never need space the disk no longer has) and maps them
// shared. It fails where the file system cannot allocate ahead.
func mapFile(f *os.File, size int64) ([]byte, error) {
	fd := int(f.Fd())
	if err := unix.Fallocate(fd, 0, 0, size); err != nil {
		return nil, err
	}
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func unmapFile(m []byte) error { return unix.Munmap(m) }
