// Package nodestate manages a node's state directory: the private key
// (created on the node, never sent anywhere, never logged), the current
// certificate, the CA bundle, the cached netmap, the coordinator settings a
// node needs to reconnect (every coordinator it knows), and the audit spool
// directory. Gateways and connectors keep working from it while the
// coordinator is away.
//
// # Threat model
//
// Other local users must not read the key or swap any file. Open refuses a
// directory that group or others can write (they could replace files, even
// a read-only key) and a key file that group or others can read, with the
// chmod command that fixes it; Create makes the directory with mode 0700 and
// every file is written with mode 0600. A crash or power loss must not leave
// a torn file: every write goes to a temporary file in the directory, is
// synced, renamed over the old file, and the directory is synced. The key
// is never overwritten, since the certificate depends on it. Contents are
// validated before they are written and when they are read, so a damaged
// file is reported rather than used.
//
// A gateway must be the only process serving a state directory (one audit
// spool, one registered address): Lock takes an flock that records who
// holds it (package dirlock), and a second gateway is refused with the
// first one named. Connectors do not lock.
//
// Out of scope: root, or the node's own user, who can read everything.
package nodestate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// EnvState is the environment variable naming the default state directory.
const EnvState = "AGENTMESH_STATE"

// File names inside a state directory.
const (
	KeyFile     = "node.key"
	CertFile    = "node.crt"
	CAFile      = "ca.crt"
	NetmapFile  = "netmap.json"
	ReceiptFile = "audit-receipt.json"
	ConfigFile  = "coordinator.json"
	SpoolSubdir = "spool"
	// LockFile is the lock file of a directory a gateway serves (Lock).
	LockFile = dirlock.LockFile
)

// ConfirmedFile holds when the coordinator last confirmed the cached
// netmap (netmap.Netmap.Fresh).
const ConfirmedFile = "netmap-confirmed"

// fileMode is the mode of every file written; the key is secret and the
// rest reveals the mesh's shape, so nothing is readable by others.
const fileMode fs.FileMode = 0o600

// DefaultDir returns the state directory to use when none is given: the
// value of AGENTMESH_STATE, else $XDG_STATE_HOME/agentmesh, else
// ~/.local/state/agentmesh, else "agentmesh-state" in the working
// directory.
func DefaultDir() string {
	if d := os.Getenv(EnvState); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "agentmesh")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "state", "agentmesh")
	}
	return "agentmesh-state"
}

// Dir is an opened state directory. Its methods are safe for concurrent
// use; each reads or writes the files afresh.
type Dir struct {
	path string
}

// Open validates an existing state directory: it must be a directory that
// group and others cannot write, and node.key, if present, must be mode
// 0600 or stricter. A missing directory matches ErrNotExist.
func Open(dir string) (*Dir, error) {
	if dir == "" {
		return nil, fmt.Errorf("open state: %w: no directory given (use --state or %s)", ErrInvalid, EnvState)
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open state: %w", &missingError{dir, "run agentmesh join --state " + dir})
	}
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open state: %w: %s is not a directory; give the state directory 'agentmesh join --state DIR' created", ErrInvalid, dir)
	}
	if mode := fi.Mode().Perm(); mode&0o022 != 0 {
		return nil, fmt.Errorf("open state: %w: %s has mode %#o and other users could replace its files; run chmod 700 %s", ErrPermissions, dir, mode, dir)
	}
	d := &Dir{path: dir}
	if _, err := d.checkKeyMode(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open state: %w", err)
	}
	return d, nil
}

// Create makes dir (and missing parents) with mode 0700, and its spool
// subdirectory, then opens it. An existing directory is opened as it is,
// so its permissions are checked, not changed.
func Create(dir string) (*Dir, error) {
	if dir == "" {
		return nil, fmt.Errorf("create state: %w: no directory given (use --state or %s)", ErrInvalid, EnvState)
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// MkdirAll's mode is filtered by the umask; make sure it is 0700.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create state: %w", err)
		}
	}
	d, err := Open(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.SpoolDir(), 0o700); err != nil {
		return nil, fmt.Errorf("create state: %w", err)
	}
	return d, nil
}

// Lock locks the state directory for a process that must be its only user
// (a gateway: one audit spool, one registered address), recording h in
// the file LockFile. A directory held by another process is refused with
// a dirlock.InUseError that names it (matching dirlock.ErrInUse): "node
// state directory DIR is in use by agentmesh serve (pid N, listening on
// ADDR, since T); stop it first". Connectors do not lock: several may run
// on one agent's state at once.
func (d *Dir) Lock(h dirlock.Holder) (*dirlock.Lock, error) {
	return dirlock.Acquire(d.path, "node state directory", h)
}

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// SpoolDir returns the path of the audit spool subdirectory. Create makes
// it; for a directory made otherwise, the spool's owner creates it.
func (d *Dir) SpoolDir() string { return filepath.Join(d.path, SpoolSubdir) }

func (d *Dir) file(name string) string { return filepath.Join(d.path, name) }

// joinHint is what to do when a file that join writes is missing.
func (d *Dir) joinHint() string { return "run agentmesh join --state " + d.path }

// read returns a file's contents or an error saying it is missing and
// what to do.
func (d *Dir) read(name, hint string) ([]byte, error) {
	b, err := os.ReadFile(d.file(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &missingError{d.file(name), hint}
	}
	return b, err
}

func (d *Dir) checkKeyMode() (fs.FileInfo, error) {
	path := d.file(KeyFile)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &missingError{path, d.joinHint()}
	}
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, path)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o; run chmod 600 %s", ErrPermissions, path, mode, path)
	}
	return fi, nil
}

// Key returns the node's private key. Its mode is checked on every read.
func (d *Dir) Key() (*ecdsa.PrivateKey, error) {
	if _, err := d.checkKeyMode(); err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	b, err := d.read(KeyFile, d.joinHint())
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	key, err := pki.DecodeKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("read key: %w: %s: %w", ErrInvalid, d.file(KeyFile), err)
	}
	return key, nil
}

// SaveKey writes the node's private key with mode 0600. It never replaces
// an existing key (the error then matches fs.ErrExist): the certificate
// and the coordinator's record are bound to it.
func (d *Dir) SaveKey(key *ecdsa.PrivateKey) error {
	if key == nil {
		return errors.New("save key: nil key")
	}
	b, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return fmt.Errorf("save key: %w", err)
	}
	if err := writeFile(d.file(KeyFile), b, false); err != nil {
		return fmt.Errorf("save key: %w", err)
	}
	return nil
}

// Certificate returns the node's certificate, ready for a tls.Config, and
// its parsed leaf. The key must match the certificate.
func (d *Dir) Certificate() (*tls.Certificate, *x509.Certificate, error) {
	b, err := d.read(CertFile, d.joinHint())
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate: %w", err)
	}
	certs, err := pki.DecodeCertsPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate: %w: %s: %w", ErrInvalid, d.file(CertFile), err)
	}
	key, err := d.Key()
	if err != nil {
		return nil, nil, fmt.Errorf("read certificate: %w", err)
	}
	leaf := certs[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("read certificate: %w: %s was not issued for %s; %s", ErrInvalid, d.file(CertFile), d.file(KeyFile), d.joinHint())
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, leaf, nil
}

// SaveCertificate stores the node's certificate, given as DER.
func (d *Dir) SaveCertificate(leafDER []byte) error {
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return fmt.Errorf("save certificate: %w: %w", ErrInvalid, err)
	}
	if err := writeFile(d.file(CertFile), pki.EncodeCertPEM(leaf), true); err != nil {
		return fmt.Errorf("save certificate: %w", err)
	}
	return nil
}

// CABundle returns the CA certificates the node trusts.
func (d *Dir) CABundle() ([]*x509.Certificate, error) {
	b, err := d.read(CAFile, d.joinHint())
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	certs, err := pki.DecodeCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w: %s: %w", ErrInvalid, d.file(CAFile), err)
	}
	return certs, nil
}

// SaveCABundle stores a PEM bundle of CA certificates. A bundle that does
// not parse is refused, so a bad update never replaces a good bundle.
func (d *Dir) SaveCABundle(pemBundle []byte) error {
	if _, err := pki.DecodeCertsPEM(pemBundle); err != nil {
		return fmt.Errorf("save CA bundle: %w: %w", ErrInvalid, err)
	}
	if err := writeFile(d.file(CAFile), pemBundle, true); err != nil {
		return fmt.Errorf("save CA bundle: %w", err)
	}
	return nil
}

// Netmap returns the cached netmap JSON.
func (d *Dir) Netmap() ([]byte, error) {
	b, err := d.read(NetmapFile, "it is written when the node reaches the coordinator; run agentmesh join --state "+d.path+" or start the node while the coordinator is up")
	if err != nil {
		return nil, fmt.Errorf("read netmap: %w", err)
	}
	return b, nil
}

// SaveNetmap caches a netmap, which must be valid JSON.
func (d *Dir) SaveNetmap(b []byte) error {
	if !json.Valid(b) {
		return fmt.Errorf("save netmap: %w: not valid JSON", ErrInvalid)
	}
	if err := writeFile(d.file(NetmapFile), b, true); err != nil {
		return fmt.Errorf("save netmap: %w", err)
	}
	return nil
}

// NetmapConfirmed returns when the coordinator last confirmed the cached
// netmap, by this node's clock, or the zero time when nothing says it
// ever did.
func (d *Dir) NetmapConfirmed() (time.Time, error) {
	b, err := os.ReadFile(d.file(ConfirmedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read netmap confirmation: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, string(bytes.TrimSpace(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("read netmap confirmation: %w: %s: %w", ErrInvalid, d.file(ConfirmedFile), err)
	}
	return t, nil
}

// SaveNetmapConfirmed records when the coordinator last confirmed the
// cached netmap. Write the netmap first: a crash between the two writes
// then leaves a newer netmap with an older confirmation, which errs on the
// side of calling it stale.
func (d *Dir) SaveNetmapConfirmed(t time.Time) error {
	if err := writeFile(d.file(ConfirmedFile), []byte(t.UTC().Format(time.RFC3339Nano)+"\n"), true); err != nil {
		return fmt.Errorf("save netmap confirmation: %w", err)
	}
	return nil
}

// SaveReceipt keeps the newest audit receipt the coordinator gave this node
// (JSON), the node's evidence of what the audit trail held.
func (d *Dir) SaveReceipt(b []byte) error {
	if !json.Valid(b) {
		return fmt.Errorf("save audit receipt: %w: not valid JSON", ErrInvalid)
	}
	if err := writeFile(d.file(ReceiptFile), b, true); err != nil {
		return fmt.Errorf("save audit receipt: %w", err)
	}
	return nil
}

// ReceiptPath is where SaveReceipt writes, for `agentmesh audit verify
// --receipt`.
func (d *Dir) ReceiptPath() string { return d.file(ReceiptFile) }

// Config is what a node needs to reconnect to its coordinators, stored in
// coordinator.json. Every field is required but Coordinators.
type Config struct {
	// CoordinatorURL is the https:// URL of the coordinator's API the node
	// joined through (all a state written before Coordinators holds).
	CoordinatorURL string `json:"coordinator_url"`
	// Coordinators are the API URLs of every coordinator the node knows,
	// in the canonical form of netmap.CheckCoordinators; empty means
	// CoordinatorURL alone (Known). Join writes the ones it was given,
	// and each netmap that arrives replaces them with its own list.
	Coordinators []string `json:"coordinators,omitempty"`
	// TrustDomain is the mesh's trust domain.
	TrustDomain string `json:"trust_domain"`
	// CAFingerprint is the lowercase hex SHA-256 of the CA certificate the
	// node joined with (pki.Fingerprint).
	CAFingerprint string `json:"ca_fingerprint"`
	// Name and Kind are the node's name and kind.
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	u, err := url.Parse(c.CoordinatorURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%w: coordinator_url %q is not an https:// URL", ErrInvalid, c.CoordinatorURL)
	}
	if err := netmap.CheckCoordinators(c.Coordinators); err != nil {
		return fmt.Errorf("%w: coordinators: %w", ErrInvalid, err)
	}
	if _, err := identity.ParseTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("%w: trust_domain: %w", ErrInvalid, err)
	}
	if !validFingerprint(c.CAFingerprint) {
		return fmt.Errorf("%w: ca_fingerprint %q is not 64 lowercase hex digits", ErrInvalid, c.CAFingerprint)
	}
	if c.Kind == identity.KindUser {
		// A person's login state ('agentmesh login'): Name is the e-mail
		// address, in its canonical form.
		if u, err := identity.ParseUser(c.Name); err != nil || string(u) != c.Name {
			return fmt.Errorf("%w: name: %s is not a user name (%s)", ErrInvalid, c.Name, identity.UserRule)
		}
		return nil
	}
	if _, err := identity.ParseName(c.Name); err != nil {
		return fmt.Errorf("%w: name: %w", ErrInvalid, err)
	}
	if _, err := identity.ParseKind(c.Kind); err != nil {
		return fmt.Errorf("%w: kind: %w", ErrInvalid, err)
	}
	return nil
}

// Known returns the coordinators the node knows: Coordinators, or the one
// it joined through when the list is empty. The slice is the caller's.
func (c Config) Known() []string {
	if len(c.Coordinators) == 0 {
		return []string{c.CoordinatorURL}
	}
	return slices.Clone(c.Coordinators)
}

// ID returns the node's identity from the config.
func (c Config) ID() (identity.ID, error) {
	return identity.New(identity.TrustDomain(c.TrustDomain), identity.Kind(c.Kind), identity.Name(c.Name))
}

func validFingerprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// CoordinatorAdminDir is where a coordinator keeps its first admin
// identity's state, inside its data directory (coordinator.AdminDir).
const CoordinatorAdminDir = "admin"

// isCoordinatorData reports whether dir looks like a coordinator's data
// directory: its admin state holds a joined node and it has a CA key
// beside it (package coordinator's layout; nodestate cannot import it). A
// person who gives it where a node's state is expected is told so.
func isCoordinatorData(dir string) bool {
	_, errAdmin := os.Stat(filepath.Join(dir, CoordinatorAdminDir, ConfigFile))
	_, errCA := os.Stat(filepath.Join(dir, pki.CAKeyFile))
	return errAdmin == nil && errCA == nil
}

// Config returns the stored coordinator settings. Unknown fields and
// invalid values are errors.
func (d *Dir) Config() (Config, error) {
	b, err := d.read(ConfigFile, d.path+" has not joined a mesh; run agentmesh join --state "+d.path)
	if errors.Is(err, ErrNotExist) && isCoordinatorData(d.path) {
		admin := filepath.Join(d.path, CoordinatorAdminDir)
		return Config{}, fmt.Errorf("read config: %w: %s is a coordinator's data directory, not a node's state; admin commands take its admin state, --state %s", ErrInvalid, d.path, admin)
	}
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("read config: %w: %s: %w", ErrInvalid, d.file(ConfigFile), err)
	}
	if dec.More() {
		return Config{}, fmt.Errorf("read config: %w: %s: trailing data", ErrInvalid, d.file(ConfigFile))
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("read config: %s: %w", d.file(ConfigFile), err)
	}
	return c, nil
}

// SaveConfig validates and stores the coordinator settings.
func (d *Dir) SaveConfig(c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := writeFile(d.file(ConfigFile), append(b, '\n'), true); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}
