// Package store opens the coordinator's embedded SQLite database (pure Go,
// no cgo) with the settings every table in agentmesh relies on, and applies
// schema migrations that each owning package declares.
//
// Packages own their tables: the registry, the policy store and the audit
// store each pass their own Migration list. This package knows nothing of
// what is stored, only how the database is opened and upgraded.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Open opens (creating if needed) the SQLite database at path in WAL mode,
// with foreign keys on, a busy timeout, and synchronous=FULL so that a
// committed transaction survives a crash or power loss: the audit trail's
// "nothing lost" promise ends here.
func Open(path string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{
		"journal_mode(WAL)",
		"synchronous(FULL)",
		"foreign_keys(ON)",
		"busy_timeout(10000)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// SQLite has one writer at a time; more connections only add lock
	// contention for writers while WAL lets readers proceed.
	db.SetMaxOpenConns(4)
	if err := db.PingContext(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// Migration is one schema step of one owner, applied once in order.
type Migration struct {
	// Version numbers an owner's steps from 1 upwards.
	Version int
	SQL     string
}

// Migrate applies the owner's migrations that the database has not yet
// seen, each in its own transaction.
func Migrate(ctx context.Context, db *sql.DB, owner string, steps []Migration) error {
	if owner == "" {
		return errors.New("store: migrate: empty owner")
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_versions (
		owner TEXT PRIMARY KEY, version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("store: migrate %s: %w", owner, err)
	}
	var have int
	err := db.QueryRowContext(ctx, `SELECT version FROM schema_versions WHERE owner = ?`, owner).Scan(&have)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: migrate %s: %w", owner, err)
	}
	for i, m := range steps {
		if m.Version != i+1 {
			return fmt.Errorf("store: migrate %s: step %d has version %d", owner, i+1, m.Version)
		}
		if m.Version <= have {
			continue
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("store: migrate %s to %d: %w", owner, m.Version, err)
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migrate %s to %d: %w", owner, m.Version, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_versions(owner, version) VALUES(?, ?)
			ON CONFLICT(owner) DO UPDATE SET version = excluded.version`, owner, m.Version); err != nil {
			tx.Rollback()
			return fmt.Errorf("store: migrate %s to %d: %w", owner, m.Version, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("store: migrate %s to %d: %w", owner, m.Version, err)
		}
	}
	return nil
}
