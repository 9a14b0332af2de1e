package nodestate_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentmesh/agentmesh/internal/nodestate"
)

func TestLocalTokenIsPrivateReplacedAndRemoved(t *testing.T) {
	d := newDir(t)
	path, err := d.SaveLocalToken("7801", "first")
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(d.Path(), "local-7801.token") {
		t.Fatalf("token file at %s", path)
	}
	if _, err := d.SaveLocalToken("7801", "second"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "second" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file holds %q with mode %04o, want the new token with 0600", b, fi.Mode().Perm())
	}
	for _, port := range []string{"../key", "", "70000", "-1"} {
		if _, err := d.SaveLocalToken(port, "x"); !errors.Is(err, nodestate.ErrInvalid) {
			t.Errorf("port %q: %v, want ErrInvalid", port, err)
		}
	}
	if err := d.RemoveLocalToken("7801"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("token file still there after removal: %v", err)
	}
	if err := d.RemoveLocalToken("7801"); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}
