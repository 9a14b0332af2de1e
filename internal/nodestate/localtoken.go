package nodestate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// LocalTokenPath returns where SaveLocalToken keeps the bearer token of the
// local HTTP endpoint on port ("7801"): local-7801.token.
func (d *Dir) LocalTokenPath(port string) string { return d.file("local-" + port + ".token") }

// SaveLocalToken writes the bearer token of the local endpoint listening on
// port, with mode 0600 and atomically (a client reading it sees the old
// token or the new one, never part of one), and returns the file's path.
// The file holds the token alone, without a newline. Only the node's owner
// (and root) can read it, as they can the node's key.
func (d *Dir) SaveLocalToken(port, token string) (string, error) {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("save local endpoint token: %w: port %q", ErrInvalid, port)
	}
	if token == "" {
		return "", fmt.Errorf("save local endpoint token: %w: empty token", ErrInvalid)
	}
	path := d.LocalTokenPath(port)
	if err := writeFile(path, []byte(token), true); err != nil {
		return "", fmt.Errorf("save local endpoint token: %w", err)
	}
	return path, nil
}

// RemoveLocalToken removes the token file of the endpoint on port, once the
// endpoint has stopped: its token opens nothing any more. A missing file is
// not an error.
func (d *Dir) RemoveLocalToken(port string) error {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("remove local endpoint token: %w: port %q", ErrInvalid, port)
	}
	if err := os.Remove(d.LocalTokenPath(port)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove local endpoint token: %w", err)
	}
	return nil
}
