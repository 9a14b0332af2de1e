// Package store opens the coordinator's database, SQLite (embedded, pure
// Go, one coordinator) or PostgreSQL (several coordinators on one
// database), with the settings every table in agentmesh relies on, and
// applies schema migrations that each owning package declares.
//
// Packages own their tables: the registry, the policy store and the audit
// store each pass their own Migration list. This package knows nothing of
// what is stored, only how the database is opened, written, upgraded and
// watched. What differs between the two databases stays here and is small:
//
//   - Queries are written once, with $1, $2... placeholders, which both
//     databases accept, in the SQL both understand.
//   - A Migration may give a PostgreSQL variant of a step where the DDL
//     differs (BIGINT and BYTEA columns, identity keys, constraints).
//   - BeginWrite serialises the writers of one Lock: SQLite has one writer
//     at a time anyway; on PostgreSQL, where several coordinators write,
//     the transaction takes an advisory lock first. The lock is held by the
//     transaction, never by a session, so a coordinator that loses its
//     database connection loses the lock with it and cannot commit: the
//     lock is its lease, fenced by the database itself.
//   - Notify and Listen tell other coordinators about a committed change
//     (PostgreSQL's NOTIFY, delivered on commit); on SQLite there are no
//     others and both do nothing.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Dialect is which database a DB is.
type Dialect int

const (
	// SQLite is the embedded default: a file, one coordinator.
	SQLite Dialect = iota
	// Postgres is PostgreSQL, shared by several coordinators.
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgresql"
	}
	return "sqlite"
}

// DB is an open database and what it is.
type DB struct {
	*sql.DB
	Dialect Dialect
	// dsn is the PostgreSQL connection string, for Listen's own
	// connection; empty for SQLite.
	dsn string
}

// IsPostgres says whether target names a PostgreSQL database (a
// postgres:// or postgresql:// URL) rather than an SQLite file.
func IsPostgres(target string) bool {
	return strings.HasPrefix(target, "postgres://") || strings.HasPrefix(target, "postgresql://")
}

// Open opens the database target names: a PostgreSQL URL, or else the path
// of an SQLite file (created if needed).
func Open(ctx context.Context, target string) (*DB, error) {
	if IsPostgres(target) {
		return OpenPostgres(ctx, target)
	}
	return OpenSQLite(target)
}

// Lock names a set of writers that must not interleave: every transaction
// begun with BeginWrite on the same Lock runs alone, across coordinators.
type Lock int64

// The locks of agentmesh's owners. The values are advisory lock keys on
// PostgreSQL, shared with nothing else: an arbitrary prefix keeps them
// apart from other applications' keys on a shared server.
const (
	// LockMigrate serialises schema migrations of coordinators starting
	// at once.
	LockMigrate Lock = 0x61676d_000001
	// LockRegistry serialises writes of auth keys, nodes and policies.
	LockRegistry Lock = 0x61676d_000002
	// LockAudit serialises appends to the audit chain and its
	// checkpoints, so that the chain never forks.
	LockAudit Lock = 0x61676d_000003
	// LockSecrets serialises the creation of the shared keys.
	LockSecrets Lock = 0x61676d_000004
)

// BeginWrite begins a transaction that no other BeginWrite of lock, in
// this process or another coordinator, overlaps. Commit or roll it back
// promptly: the others wait for it.
func (db *DB) BeginWrite(ctx context.Context, lock Lock) (*sql.Tx, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if db.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lock)); err != nil {
			tx.Rollback()
			return nil, fmt.Errorf("store: write lock: %w", err)
		}
	}
	return tx, nil
}

// Notify tells other coordinators, once tx commits, that something on
// channel changed; payload says what (at most a few hundred bytes). On
// SQLite, with no other coordinator, it does nothing.
func (db *DB) Notify(ctx context.Context, tx *sql.Tx, channel, payload string) error {
	if db.Dialect != Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, payload)
	return err
}

// BeginSnapshot begins a read-only transaction that sees one snapshot of
// the database from its first read to its end, whatever others commit
// meanwhile: SQLite's WAL readers do; PostgreSQL needs REPEATABLE READ.
func (db *DB) BeginSnapshot(ctx context.Context) (*sql.Tx, error) {
	opts := &sql.TxOptions{ReadOnly: true}
	if db.Dialect == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	return db.BeginTx(ctx, opts)
}
