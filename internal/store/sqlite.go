package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// OpenSQLite opens (creating if needed) the SQLite database at path in WAL
// mode, with foreign keys on, a busy timeout, and synchronous=FULL so that
// a committed transaction survives a crash or power loss: the audit
// trail's "nothing lost" promise ends here. Transactions begin IMMEDIATE,
// so a writer holds the database's one write lock from its first
// statement: that is what BeginWrite's Lock amounts to here.
func OpenSQLite(path string) (*DB, error) {
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
	return &DB{DB: db, Dialect: SQLite}, nil
}
