package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Migration is one schema step of one owner, applied once in order.
type Migration struct {
	// Version numbers an owner's steps from 1 upwards.
	Version int
	// SQL is the step, for both databases unless Postgres is set.
	SQL string
	// Postgres, when set, is the step on PostgreSQL, where its DDL
	// differs (types, identity keys, constraints).
	Postgres string
}

func (m Migration) sql(d Dialect) string {
	if d == Postgres && m.Postgres != "" {
		return m.Postgres
	}
	return m.SQL
}

// ErrSchemaNewer refuses a database that a newer agentmesh has migrated
// past what this one knows.
var ErrSchemaNewer = errors.New("the database schema is newer than this agentmesh")

// Migrate applies the owner's migrations that the database has not yet
// seen, each in its own transaction. Coordinators starting at once on one
// PostgreSQL database take turns (LockMigrate), and each step is applied
// by exactly one of them.
func Migrate(ctx context.Context, db *DB, owner string, steps []Migration) error {
	if owner == "" {
		return errors.New("store: migrate: empty owner")
	}
	for i, m := range steps {
		if m.Version != i+1 {
			return fmt.Errorf("store: migrate %s: step %d has version %d", owner, i+1, m.Version)
		}
	}
	for {
		done, err := migrateStep(ctx, db, owner, steps)
		if err != nil {
			return fmt.Errorf("store: migrate %s: %w", owner, err)
		}
		if done {
			return nil
		}
	}
}

// migrateStep applies the first step the database has not seen, in one
// transaction that reads the version under the lock. It reports done when
// there was none left.
func migrateStep(ctx context.Context, db *DB, owner string, steps []Migration) (bool, error) {
	tx, err := db.BeginWrite(ctx, LockMigrate)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_versions (
		owner TEXT PRIMARY KEY, version INTEGER NOT NULL)`); err != nil {
		return false, err
	}
	have, err := version(ctx, tx, owner)
	if err != nil {
		return false, err
	}
	if have > len(steps) {
		return false, fmt.Errorf("%w: %s is at version %d, this one knows %d; run the newer agentmesh", ErrSchemaNewer, owner, have, len(steps))
	}
	if have == len(steps) {
		return true, tx.Commit()
	}
	m := steps[have]
	if _, err := tx.ExecContext(ctx, m.sql(db.Dialect)); err != nil {
		return false, fmt.Errorf("to %d: %w", m.Version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_versions(owner, version) VALUES($1, $2)
		ON CONFLICT(owner) DO UPDATE SET version = excluded.version`, owner, m.Version); err != nil {
		return false, fmt.Errorf("to %d: %w", m.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("to %d: %w", m.Version, err)
	}
	return false, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func version(ctx context.Context, q querier, owner string) (int, error) {
	var have int
	err := q.QueryRowContext(ctx, `SELECT version FROM schema_versions WHERE owner = $1`, owner).Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return have, err
}

// Current checks that the owner's schema is exactly at its newest step, as
// a coordinator's readiness requires.
func Current(ctx context.Context, db *DB, owner string, steps []Migration) error {
	have, err := version(ctx, db, owner)
	if err != nil {
		return fmt.Errorf("store: schema of %s: %w", owner, err)
	}
	if have != len(steps) {
		return fmt.Errorf("store: schema of %s is at version %d, want %d", owner, have, len(steps))
	}
	return nil
}
