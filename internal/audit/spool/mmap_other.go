//go:build !linux

package spool

import (
	"errors"
	"os"
)

// mapFile is not used outside Linux: appends use pwrite.
func mapFile(*os.File, int64) ([]byte, error) { return nil, errors.ErrUnsupported }

func unmapFile([]byte) error { return nil }
