package loopback

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// UnixPrefix marks a Unix socket path in a listen address:
// "unix:/run/user/1000/agentmesh/payments.sock".
const UnixPrefix = "unix:"

// listenUnix listens on a Unix stream socket at path with mode 0600, in a
// directory that only the current user can enter (mode 0700, created if
// missing). Its permissions, not its address, keep other local users out:
// a directory that others may enter or write is refused, since they could
// reach or replace the socket, and a stale socket left by a process that
// died is removed (anything else at path is refused, never removed).
func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("listen unix: empty socket path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("listen %s%s: %w", UnixPrefix, path, err)
	}
	dir := filepath.Dir(abs)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("listen %s%s: %w", UnixPrefix, abs, err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("listen %s%s: %w", UnixPrefix, abs, err)
	}
	if err := removeStaleSocket(abs); err != nil {
		return nil, fmt.Errorf("listen %s%s: %w", UnixPrefix, abs, err)
	}
	ln, err := net.Listen("unix", abs)
	if err != nil {
		return nil, fmt.Errorf("listen %s%s: %w", UnixPrefix, abs, err)
	}
	// The directory already keeps others out between bind and chmod; the
	// mode says the same on the socket itself.
	if err := os.Chmod(abs, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s%s: %w", UnixPrefix, abs, err)
	}
	return ln, nil
}

// checkPrivateDir refuses a directory that is a symlink, not the current
// user's, or open to group or others.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := ownedBySelf(fi); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("directory %s is mode %04o: other users could reach the socket; use a private directory (chmod 700 %s)", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// removeStaleSocket removes a socket at path that nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
}
