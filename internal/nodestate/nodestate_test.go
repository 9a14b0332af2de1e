package nodestate_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newDir(t *testing.T) *nodestate.Dir {
	t.Helper()
	d, err := nodestate.Create(filepath.Join(t.TempDir(), "node"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func validConfig(ca *pki.CA) nodestate.Config {
	return nodestate.Config{
		CoordinatorURL: "https://127.0.0.1:7443",
		TrustDomain:    "test.mesh",
		CAFingerprint:  ca.Fingerprint(),
		Name:           "fraud-detector",
		Kind:           "agent",
	}
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestCreateMakesPrivateDirectoryWithSpool(t *testing.T) {
	d := newDir(t)
	if m := mode(t, d.Path()); m != 0o700 {
		t.Errorf("directory mode %#o, want 0700", m)
	}
	fi, err := os.Stat(d.SpoolDir())
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("spool dir: %v, %v", fi, err)
	}
	if d.SpoolDir() != filepath.Join(d.Path(), "spool") {
		t.Errorf("SpoolDir = %s", d.SpoolDir())
	}
	if _, err := nodestate.Open(d.Path()); err != nil {
		t.Errorf("Open after Create: %v", err)
	}
	// Create on an existing directory opens it.
	if _, err := nodestate.Create(d.Path()); err != nil {
		t.Errorf("Create again: %v", err)
	}
}

func TestOpenRefusesUnsafeOrMissingDirectories(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mode fs.FileMode // 0: do not create
		path string
		want error
		text string
	}{
		{name: "missing", path: filepath.Join(base, "nope"), want: nodestate.ErrNotExist, text: "agentmesh join"},
		{name: "world writable", mode: 0o777, want: nodestate.ErrPermissions, text: "chmod 700"},
		{name: "others writable", mode: 0o703, want: nodestate.ErrPermissions, text: "chmod 700"},
		{name: "group writable", mode: 0o770, want: nodestate.ErrPermissions, text: "chmod 700"},
		{name: "a file", path: file, want: nodestate.ErrInvalid, text: "not a directory"},
		{name: "empty path", path: "", want: nodestate.ErrInvalid, text: "--state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path
			if tt.mode != 0 {
				path = filepath.Join(base, strings.ReplaceAll(tt.name, " ", "-"))
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			_, err := nodestate.Open(path)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Open = %v, want %v mentioning %q", err, tt.want, tt.text)
			}
		})
	}
}

func TestMissingDirectoryMatchesFsErrNotExist(t *testing.T) {
	_, err := nodestate.Open(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, nodestate.ErrNotExist) {
		t.Fatalf("err = %v, want both ErrNotExist sentinels", err)
	}
}

func TestKeyModeIsChecked(t *testing.T) {
	for _, m := range []fs.FileMode{0o640, 0o604, 0o644} {
		d := newDir(t)
		key, _ := pki.NewKey()
		if err := d.SaveKey(key); err != nil {
			t.Fatal(err)
		}
		keyPath := filepath.Join(d.Path(), nodestate.KeyFile)
		if got := mode(t, keyPath); got != 0o600 {
			t.Fatalf("node.key written with mode %#o", got)
		}
		if err := os.Chmod(keyPath, m); err != nil {
			t.Fatal(err)
		}
		want := "chmod 600 " + keyPath
		if _, err := nodestate.Open(d.Path()); !errors.Is(err, nodestate.ErrPermissions) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open with key mode %#o: %v, want ErrPermissions naming %q", m, err, want)
		}
		if _, err := d.Key(); !errors.Is(err, nodestate.ErrPermissions) {
			t.Errorf("Key with mode %#o: %v, want ErrPermissions", m, err)
		}
	}
}

func TestKeyRoundTripAndNeverOverwritten(t *testing.T) {
	d := newDir(t)
	key, _ := pki.NewKey()
	if err := d.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	got, err := d.Key()
	if err != nil || !got.Equal(key) {
		t.Fatalf("Key = %v; want the saved key", err)
	}
	other, _ := pki.NewKey()
	if err := d.SaveKey(other); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second SaveKey: %v, want ErrExist", err)
	}
	if got, _ := d.Key(); !got.Equal(key) {
		t.Fatal("key was replaced")
	}
}

func TestCertificateRoundTrip(t *testing.T) {
	d := newDir(t)
	ca := pkitest.NewCA(t, "test.mesh", t0)
	key, _ := pki.NewKey()
	if err := d.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	csr, _ := pki.CreateCSR(key)
	parsed, err := pki.DecodeCSRPEM(pki.EncodeCSRPEM(csr))
	if err != nil {
		t.Fatal(err)
	}
	id := pkitest.ID(t, "test.mesh", identity.KindAgent, "fraud-detector")
	_, der, err := ca.Issue(parsed, pki.IssueRequest{ID: id, Incarnation: "1", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SaveCertificate(der); err != nil {
		t.Fatal(err)
	}
	tc, leaf, err := d.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Raw, der) || tc.Leaf != leaf || len(tc.Certificate) != 1 || !key.Equal(tc.PrivateKey) {
		t.Fatal("certificate round trip lost something")
	}
	if err := d.SaveCABundle(pki.EncodeCertPEM(ca.Certificate())); err != nil {
		t.Fatal(err)
	}
	roots, err := d.CABundle()
	if err != nil || len(roots) != 1 || !roots[0].Equal(ca.Certificate()) {
		t.Fatalf("CABundle = %d certs, %v", len(roots), err)
	}
}

func TestCertificateRefusesForeignKey(t *testing.T) {
	d := newDir(t)
	ca := pkitest.NewCA(t, "test.mesh", t0)
	key, _ := pki.NewKey()
	if err := d.SaveKey(key); err != nil {
		t.Fatal(err)
	}
	// A certificate for some other key.
	other := pkitest.Issue(t, ca, pkitest.ID(t, "test.mesh", identity.KindAgent, "a"), t0, time.Hour)
	if err := d.SaveCertificate(other.Certificate[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Certificate(); !errors.Is(err, nodestate.ErrInvalid) {
		t.Fatalf("Certificate = %v, want ErrInvalid", err)
	}
}

func TestMissingFilesSayWhatToDo(t *testing.T) {
	d := newDir(t)
	tests := []struct {
		file string
		call func() error
		hint string
	}{
		{nodestate.KeyFile, func() error { _, err := d.Key(); return err }, "agentmesh join"},
		{nodestate.CertFile, func() error { _, _, err := d.Certificate(); return err }, "agentmesh join"},
		{nodestate.CAFile, func() error { _, err := d.CABundle(); return err }, "agentmesh join"},
		{nodestate.NetmapFile, func() error { _, err := d.Netmap(); return err }, "coordinator"},
		{nodestate.ConfigFile, func() error { _, err := d.Config(); return err }, "agentmesh join --state " + d.Path()},
	}
	for _, tt := range tests {
		err := tt.call()
		if !errors.Is(err, nodestate.ErrNotExist) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: err = %v, want ErrNotExist", tt.file, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, filepath.Join(d.Path(), tt.file)) || !strings.Contains(msg, tt.hint) {
			t.Errorf("%s: message %q should name the file and say %q", tt.file, msg, tt.hint)
		}
	}
}

func TestConfigRoundTripAndValidation(t *testing.T) {
	d := newDir(t)
	ca := pkitest.NewCA(t, "test.mesh", t0)
	c := validConfig(ca)
	if err := d.SaveConfig(c); err != nil {
		t.Fatal(err)
	}
	got, err := d.Config()
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("Config = %+v, %v; want %+v", got, err, c)
	}
	if id, err := got.ID(); err != nil || id.String() != "spiffe://test.mesh/agent/fraud-detector" {
		t.Errorf("ID = %v, %v", id, err)
	}
	bad := []func(*nodestate.Config){
		func(c *nodestate.Config) { c.CoordinatorURL = "http://127.0.0.1:7443" },
		func(c *nodestate.Config) { c.CoordinatorURL = "" },
		func(c *nodestate.Config) { c.TrustDomain = "Bad" },
		func(c *nodestate.Config) { c.CAFingerprint = strings.ToUpper(c.CAFingerprint) },
		func(c *nodestate.Config) { c.Name = "" },
		func(c *nodestate.Config) { c.Kind = "robot" },
		func(c *nodestate.Config) { c.Coordinators = []string{"http://127.0.0.1:7443"} },
		func(c *nodestate.Config) { c.Coordinators = []string{"https://b:1", "https://a:1"} },
		func(c *nodestate.Config) { c.Coordinators = []string{"https://a:1", "https://a:1"} },
	}
	for i, modify := range bad {
		bc := c
		modify(&bc)
		if err := d.SaveConfig(bc); !errors.Is(err, nodestate.ErrInvalid) {
			t.Errorf("bad config %d: SaveConfig = %v, want ErrInvalid", i, err)
		}
	}
	if got, _ := d.Config(); !reflect.DeepEqual(got, c) {
		t.Error("a refused SaveConfig changed the stored config")
	}
}

func TestConfigKeepsEveryCoordinatorAndKnowsTheJoinedOneWithoutAList(t *testing.T) {
	d := newDir(t)
	ca := pkitest.NewCA(t, "test.mesh", t0)
	c := validConfig(ca)
	// A state written before the list: the one coordinator it joined.
	if got := c.Known(); !reflect.DeepEqual(got, []string{c.CoordinatorURL}) {
		t.Fatalf("Known without a list = %q, want the joined coordinator", got)
	}
	c.Coordinators = []string{"https://127.0.0.1:7443", "https://127.0.0.2:7443"}
	if err := d.SaveConfig(c); err != nil {
		t.Fatal(err)
	}
	got, err := d.Config()
	if err != nil || !reflect.DeepEqual(got.Known(), c.Coordinators) {
		t.Fatalf("Known after a round trip = %q, %v; want %q", got.Known(), err, c.Coordinators)
	}
	got.Known()[0] = "changed"
	if got.Coordinators[0] == "changed" {
		t.Fatal("Known hands out the config's own slice")
	}
}

func TestConfigRefusesUnknownFields(t *testing.T) {
	d := newDir(t)
	ca := pkitest.NewCA(t, "test.mesh", t0)
	if err := d.SaveConfig(validConfig(ca)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.Path(), nodestate.ConfigFile)
	b, _ := os.ReadFile(path)
	b = bytes.Replace(b, []byte(`"kind"`), []byte(`"extra": 1, "kind"`), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Config(); !errors.Is(err, nodestate.ErrInvalid) || !strings.Contains(err.Error(), "extra") {
		t.Fatalf("Config = %v, want ErrInvalid naming the unknown field", err)
	}
}

func TestSavesAreAtomicAndPrivate(t *testing.T) {
	d := newDir(t)
	ca := pkitest.NewCA(t, "test.mesh", t0)
	first := []byte(`{"version":1}`)
	if err := d.SaveNetmap(first); err != nil {
		t.Fatal(err)
	}
	// Invalid content is refused and leaves the old file in place.
	if err := d.SaveNetmap([]byte(`{"version":`)); !errors.Is(err, nodestate.ErrInvalid) {
		t.Fatalf("SaveNetmap(bad) = %v, want ErrInvalid", err)
	}
	if err := d.SaveCABundle([]byte("not pem")); !errors.Is(err, nodestate.ErrInvalid) {
		t.Fatalf("SaveCABundle(bad) = %v, want ErrInvalid", err)
	}
	if err := d.SaveCertificate([]byte{1, 2, 3}); !errors.Is(err, nodestate.ErrInvalid) {
		t.Fatalf("SaveCertificate(bad) = %v, want ErrInvalid", err)
	}
	if got, err := d.Netmap(); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("Netmap = %q, %v; want the first version", got, err)
	}
	// A replacement is complete.
	second := []byte(`{"version":2}`)
	if err := d.SaveNetmap(second); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Netmap(); !bytes.Equal(got, second) {
		t.Fatalf("Netmap = %q, want %q", got, second)
	}
	if err := d.SaveCABundle(pki.EncodeCertPEM(ca.Certificate())); err != nil {
		t.Fatal(err)
	}
	// Every file is 0600 and no temporary file is left.
	entries, err := os.ReadDir(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
		if e.IsDir() {
			continue
		}
		if m := mode(t, filepath.Join(d.Path(), e.Name())); m != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", e.Name(), m)
		}
	}
}

func TestSaveIntoVanishedDirectoryFails(t *testing.T) {
	d := newDir(t)
	if err := os.RemoveAll(d.Path()); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveNetmap([]byte(`{}`)); err == nil {
		t.Fatal("SaveNetmap into a removed directory succeeded")
	}
}

func TestDefaultDirFollowsEnvironment(t *testing.T) {
	t.Setenv(nodestate.EnvState, "/srv/agentmesh/payments")
	if got := nodestate.DefaultDir(); got != "/srv/agentmesh/payments" {
		t.Errorf("with %s set: %q", nodestate.EnvState, got)
	}
	t.Setenv(nodestate.EnvState, "")
	t.Setenv("XDG_STATE_HOME", "/home/u/.state")
	if got := nodestate.DefaultDir(); got != "/home/u/.state/agentmesh" {
		t.Errorf("with XDG_STATE_HOME set: %q", got)
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got := nodestate.DefaultDir(); got != "/home/u/.local/state/agentmesh" {
		t.Errorf("from HOME: %q", got)
	}
}

func TestReadersNeverSeeAPartialWrite(t *testing.T) {
	d := newDir(t)
	// Two large, distinct netmaps; a reader must always see one of them
	// whole, however the writes interleave with its reads.
	a := []byte(`{"n":"` + strings.Repeat("a", 256<<10) + `"}`)
	b := []byte(`{"n":"` + strings.Repeat("b", 256<<10) + `"}`)
	if err := d.SaveNetmap(a); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range 50 {
			next := a
			if i%2 == 0 {
				next = b
			}
			if err := d.SaveNetmap(next); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for reading := true; reading; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			reading = false
		default:
		}
		got, err := d.Netmap()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
			t.Fatalf("read a torn netmap of %d bytes", len(got))
		}
	}
}

// TestConfigNamesACoordinatorsDataDirectory: a coordinator's data
// directory given where a node's state is expected is named as such, with
// the admin state to give instead; any other directory without a config
// is one that has not joined.
func TestConfigNamesACoordinatorsDataDirectory(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	admin, err := nodestate.Create(filepath.Join(data, nodestate.CoordinatorAdminDir))
	if err != nil {
		t.Fatal(err)
	}
	ca := pkitest.NewCA(t, "test.mesh", t0)
	if err := admin.SaveConfig(validConfig(ca)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, pki.CAKeyFile), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := nodestate.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	want := data + " is a coordinator's data directory, not a node's state; admin commands take its admin state, --state " + admin.Path()
	if _, err := d.Config(); !errors.Is(err, nodestate.ErrInvalid) || !strings.Contains(fmt.Sprint(err), want) {
		t.Fatalf("Config of a coordinator's data directory = %v, want %q", err, want)
	}
	if _, err := newDir(t).Config(); !errors.Is(err, nodestate.ErrNotExist) || !strings.Contains(fmt.Sprint(err), "has not joined a mesh") {
		t.Fatalf("Config of a node that has not joined = %v", err)
	}
}
