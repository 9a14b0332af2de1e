package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
)

// ExistingTables returns those of names that are tables in db (in the
// order of names), from the catalogue each database keeps: restore and
// migrate refuse a database that already holds any of them.
func (db *DB) ExistingTables(ctx context.Context, names []string) ([]string, error) {
	q := `SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1`
	if db.Dialect == Postgres {
		q = `SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`
	}
	var have []string
	for _, n := range names {
		var one int
		err := db.QueryRowContext(ctx, q, n).Scan(&one)
		switch {
		case err == nil:
			have = append(have, n)
		case !errors.Is(err, sql.ErrNoRows):
			return nil, fmt.Errorf("store: looking for table %s: %w", n, err)
		}
	}
	return have, nil
}

// identifier is what ResetIdentity accepts as a table or column name: it
// is spliced into SQL, so only plain names.
var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ResetIdentity moves the identity sequence of table's column past the
// largest value in it, after rows were inserted with explicit values (a
// restore): otherwise PostgreSQL would hand out values already taken. On
// SQLite, whose INTEGER PRIMARY KEY takes the largest plus one, it does
// nothing.
func ResetIdentity(ctx context.Context, tx *sql.Tx, d Dialect, table, column string) error {
	if d != Postgres {
		return nil
	}
	if !identifier.MatchString(table) || !identifier.MatchString(column) {
		return fmt.Errorf("store: reset identity: bad name %q.%q", table, column)
	}
	// setval(seq, max, true) makes the next value max+1; on an empty
	// table setval(seq, 1, false) makes it 1.
	_, err := tx.ExecContext(ctx, fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'),
		COALESCE(MAX(%s), 1), MAX(%s) IS NOT NULL) FROM %s`, table, column, column, column, table))
	if err != nil {
		return fmt.Errorf("store: reset identity of %s.%s: %w", table, column, err)
	}
	return nil
}
