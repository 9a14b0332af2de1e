package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/durable"
	"github.com/agentmesh/agentmesh/internal/store"
)

// The data directory keeps the database in a directory of its own, apart
// from the keys:
//
//	DATA/              mode 0700: lock, ca.key, ca.crt, audit.key, admin/
//	DATA/db/           mode 0700: mesh.db and SQLite's -wal and -shm files
//
// The audit trail's threat model includes someone who can write the
// database (a backup restored after editing, a replica, a database tool,
// later a shared PostgreSQL) but does not hold the audit signing key. A
// SQLite writer needs write access to the database's directory, for its
// journal files; so the key must not sit in that directory, where whoever
// is given or copies the database would find it beside it. DATA/db is what
// backups, replication and database tools need; the keys stay one level
// up, and Config.AuditKeyFile (--audit-key) can put the audit key
// elsewhere altogether (another file system, another owner). Someone who
// acts as the coordinator's own user reaches everything it reaches: that
// is outside what any file layout can defend.
const (
	// DatabaseDir is the database's directory inside the data directory.
	DatabaseDir = "db"
	// DatabaseFile is the SQLite database's file name.
	DatabaseFile = "mesh.db"
	// AuditKeyFile is the default audit signing key, in the data
	// directory (not in DatabaseDir).
	AuditKeyFile = "audit.key"
)

// DatabasePath is where the coordinator with data directory dataDir keeps
// its database.
func DatabasePath(dataDir string) string {
	return filepath.Join(dataDir, DatabaseDir, DatabaseFile)
}

// LockCommand is how a coordinator describes itself in its data
// directory's lock file, for the error a second coordinator gets.
const LockCommand = "agentmesh coordinator"

// lockData creates the data directory on first start (mode 0700), refuses
// one that other users may enter, and locks it for this coordinator's
// life (package dirlock): two coordinators on one directory would each
// rewrite the admin identity's coordinator address and write one database
// and audit chain. The lock file says who holds it.
func (c *Coordinator) lockData() error {
	dir := c.cfg.DataDir
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return fmt.Errorf("data directory %s is a file, not a directory; give --data a directory (it is created on first start)", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create the data directory %s: %w; give --data a directory this user can create or write", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("data directory %s is accessible to other users (mode %v); run: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	lock, err := dirlock.Acquire(dir, "data directory", dirlock.Holder{Command: LockCommand, Listen: c.cfg.Listen, Since: c.now()})
	if err != nil {
		return err
	}
	c.lock = lock
	return nil
}

// openDatabase opens the coordinator's database: target when it is a
// PostgreSQL URL, else the SQLite database of data directory dir, first
// moving a database that an earlier version kept at DATA/mesh.db (next to
// the keys) into DATA/db.
func openDatabase(ctx context.Context, dir, target string, log *slog.Logger) (*store.DB, error) {
	if store.IsPostgres(target) {
		return store.OpenPostgres(ctx, target)
	}
	if target != "" {
		return nil, fmt.Errorf("--db %s: want a postgres:// URL, or nothing for the SQLite database in the data directory", store.Redact(target))
	}
	dbDir := filepath.Join(dir, DatabaseDir)
	path := DatabasePath(dir)
	old := filepath.Join(dir, DatabaseFile)
	_, errNew := os.Stat(path)
	_, errOld := os.Stat(old)
	switch {
	case errNew == nil && errOld == nil:
		return nil, fmt.Errorf("database: both %s and %s exist; keep the one this mesh uses and move the other away", path, old)
	case errOld == nil:
		if err := moveDatabase(old, dbDir, path); err != nil {
			return nil, fmt.Errorf("database: moving %s to %s: %w", old, path, err)
		}
		log.Warn("coordinator: moved the database into its own directory, apart from the signing keys", "from", old, "to", path)
	case !errors.Is(errOld, fs.ErrNotExist):
		return nil, fmt.Errorf("database: %w", errOld)
	}
	if err := os.MkdirAll(dbDir, 0o700); err != nil {
		return nil, fmt.Errorf("database directory: %w", err)
	}
	if err := privateDir(dbDir); err != nil {
		return nil, err
	}
	return store.OpenSQLite(path)
}

// moveDatabase checkpoints the database at old (so its whole content is
// in the main file and the journal is empty) and renames it, journal files
// first, into dbDir as path. Interrupted, it leaves either the old file
// complete or the new one; a second start finishes the move.
func moveDatabase(old, dbDir, path string) error {
	db, err := store.OpenSQLite(old)
	if err != nil {
		return err
	}
	_, err = db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dbDir, 0o700); err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm", ""} {
		err := os.Rename(old+suffix, path+suffix)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return errors.Join(durable.SyncDir(dbDir), durable.SyncDir(filepath.Dir(old)))
}

// privateDir refuses a directory that other users may read or enter.
func privateDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is accessible to other users (mode %v); run: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// auditKeyPath is the audit signing key of c: Config.AuditKeyFile, or
// DATA/audit.key. A key inside the database's directory is refused.
func (c *Coordinator) auditKeyPath() (string, error) {
	path := c.cfg.AuditKeyFile
	if path == "" {
		path = filepath.Join(c.cfg.DataDir, AuditKeyFile)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("audit key: %w", err)
	}
	dbDir, err := filepath.Abs(filepath.Join(c.cfg.DataDir, DatabaseDir))
	if err != nil {
		return "", fmt.Errorf("audit key: %w", err)
	}
	if rel, err := filepath.Rel(dbDir, abs); err == nil && !strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("audit key %s is inside the database's directory %s, where a database writer reaches it; keep it elsewhere", path, dbDir)
	}
	return path, nil
}

// hasCheckpoints reports whether the database holds signed audit
// checkpoints (false when the audit tables do not exist yet).
func hasCheckpoints(db *store.DB) bool {
	var n int
	return db.QueryRow(`SELECT count(*) FROM (SELECT 1 FROM audit_checkpoints LIMIT 1)`).Scan(&n) == nil && n > 0
}
