package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentmesh/agentmesh/internal/backoff"
)

// listen is Listen on PostgreSQL.
func listen(ctx context.Context, dsn, channel string, w Watcher) error {
	cfg, err := connConfig(dsn)
	if err != nil {
		return err
	}
	b := backoff.Backoff{}
	for {
		err := listenOnce(ctx, cfg, channel, w, b.Reset)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if w.Lost != nil {
			w.Lost(err)
		}
		if err := b.Wait(ctx); err != nil {
			return err
		}
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails or ctx ends. connected is called once listening.
func listenOnce(ctx context.Context, cfg *pgx.ConnConfig, channel string, w Watcher, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		// A dead server must not hold the listener up: Close only says
		// goodbye.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	connected()
	if w.Reset != nil {
		w.Reset()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return errors.Join(err, ctx.Err())
		}
		if w.Notify != nil {
			w.Notify(n.Payload)
		}
	}
}
