//go:build unix

package loopback

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ownedBySelf refuses a file that the current user does not own.
func ownedBySelf(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("cannot read the owner")
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("owned by uid %d, not by this user (uid %d)", st.Uid, os.Getuid())
	}
	return nil
}
