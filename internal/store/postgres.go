package store

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Session settings of every PostgreSQL connection. A transaction left open
// by a coordinator that stopped answering (partitioned, paused, killed
// while the server has not noticed) would hold its write lock for as long
// as TCP takes to notice; idleInTx ends it, with its lock, much sooner. A
// writer waits lockWait at most for the lock, then fails, and its caller
// retries later (a node re-ships audit; an admin sees an error), rather
// than piling up behind a stuck coordinator.
const (
	idleInTx = 15 * time.Second
	lockWait = 20 * time.Second
	dialWait = 5 * time.Second
)

// OpenPostgres connects to the PostgreSQL database at dsn (a postgres://
// URL; libpq's parameters, such as sslmode or host=/socket/dir, apply).
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := connConfig(dsn)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, dialWait)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", Redact(dsn), err)
	}
	return &DB{DB: db, Dialect: Postgres, dsn: dsn}, nil
}

func connConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the URL, password included.
		return nil, fmt.Errorf("store: %s is not a valid PostgreSQL URL", Redact(dsn))
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > dialWait {
		cfg.ConnectTimeout = dialWait
	}
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = fmt.Sprint(idleInTx.Milliseconds())
	cfg.RuntimeParams["lock_timeout"] = fmt.Sprint(lockWait.Milliseconds())
	cfg.RuntimeParams["application_name"] = "agentmesh coordinator"
	return cfg, nil
}

// Redact returns dsn with any password replaced, for messages and logs.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		if IsPostgres(dsn) {
			return "postgres://(unparsable URL)"
		}
		return dsn
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Watcher is told what Listen hears.
type Watcher struct {
	// Notify is called with each payload notified on the channel.
	Notify func(payload string)
	// Reset is called after every (re)connection: notifications sent
	// while the listener was away are lost, so the caller rereads what it
	// keeps.
	Reset func()
	// Lost is called with the error that ended a connection (nil: ignore).
	Lost func(error)
}

// Listen delivers what is notified on channel (see Notify) to w until ctx
// ends. A PostgreSQL listener keeps its own connection and reconnects with
// backoff when it is lost. On SQLite, with nothing to listen to, Listen
// returns at once.
func (db *DB) Listen(ctx context.Context, channel string, w Watcher) error {
	if db.Dialect != Postgres {
		return nil
	}
	return listen(ctx, db.dsn, channel, w)
}

// Ping checks that the database answers within d.
func (db *DB) Ping(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var one int
	return db.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
}
