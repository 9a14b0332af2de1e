package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// target is where one database of the suite lives.
type target struct {
	name string
	// url returns a fresh database's target, the same on every call
	// within one test.
	url func(t *testing.T) string
}

// bothStores runs f once on SQLite and once on PostgreSQL: the store's
// behaviour is the same on both, and this suite is what says so.
func bothStores(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "mesh.db")) })
	t.Run("postgres", func(t *testing.T) { f(t, pgtest.Shared(t).NewDatabase(t)) })
}

func open(t *testing.T, url string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMigrateAppliesEachStepOnceAcrossReopen(t *testing.T) {
	bothStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		steps := []store.Migration{
			{Version: 1, SQL: `CREATE TABLE t (x INTEGER)`, Postgres: `CREATE TABLE t (x BIGINT)`},
			{Version: 2, SQL: `INSERT INTO t VALUES (1)`},
		}
		for range 2 {
			db, err := store.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			if err := store.Migrate(ctx, db, "test", steps); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("rows = %d, want 1 (a step ran twice)", n)
			}
			if err := store.Current(ctx, db, "test", steps); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}
	})
}

func TestCoordinatorsMigratingAtOnceApplyEachStepOnce(t *testing.T) {
	bothStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		steps := []store.Migration{
			{Version: 1, SQL: `CREATE TABLE t (x INTEGER)`},
			{Version: 2, SQL: `INSERT INTO t VALUES (1)`},
			{Version: 3, SQL: `INSERT INTO t VALUES (2)`},
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			db := open(t, url)
			wg.Go(func() { errs <- store.Migrate(ctx, db, "test", steps) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := open(t, url).QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("rows = %d, want 2", n)
		}
	})
}

func TestMigrateRefusesANewerSchemaAndMisnumberedSteps(t *testing.T) {
	bothStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := open(t, url)
		if err := store.Migrate(ctx, db, "x", []store.Migration{{Version: 2, SQL: `SELECT 1`}}); err == nil {
			t.Fatal("misnumbered migration accepted")
		}
		two := []store.Migration{{Version: 1, SQL: `SELECT 1`}, {Version: 2, SQL: `SELECT 2`}}
		if err := store.Migrate(ctx, db, "x", two); err != nil {
			t.Fatal(err)
		}
		err := store.Migrate(ctx, db, "x", two[:1])
		if !errors.Is(err, store.ErrSchemaNewer) {
			t.Fatalf("older binary on a newer schema: %v, want ErrSchemaNewer", err)
		}
		if err := store.Current(ctx, db, "x", two[:1]); err == nil {
			t.Fatal("Current accepted a schema at another version")
		}
	})
}

// TestBeginWriteSerialisesWriters makes read-modify-write transactions from
// several handles (on PostgreSQL, as several coordinators would) race: with
// the lock none is lost.
func TestBeginWriteSerialisesWriters(t *testing.T) {
	bothStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		setup := open(t, url)
		if _, err := setup.Exec(`CREATE TABLE c (n BIGINT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		if _, err := setup.Exec(`INSERT INTO c VALUES (0)`); err != nil {
			t.Fatal(err)
		}
		const writers, each = 4, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for range writers {
			db := open(t, url)
			wg.Go(func() {
				for range each {
					if err := increment(ctx, db); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var n int
		if err := setup.QueryRow(`SELECT n FROM c`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != writers*each {
			t.Fatalf("counter = %d, want %d: writers interleaved", n, writers*each)
		}
	})
}

func increment(ctx context.Context, db *store.DB) error {
	tx, err := db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT n FROM c`).Scan(&n); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE c SET n = $1`, n+1); err != nil {
		return err
	}
	return tx.Commit()
}

func TestNotifyReachesListenersOnCommitOnly(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := open(t, url)
	got := make(chan string, 10)
	listening := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() {
		done <- db.Listen(ctx, "agentmesh_test", store.Watcher{
			Notify: func(p string) { got <- p },
			Reset:  func() { listening <- struct{}{} },
		})
	}()
	<-listening
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginWrite(ctx, store.LockRegistry)
		if err != nil {
			t.Fatal(err)
		}
		payload := "rolled back"
		if commit {
			payload = "committed"
		}
		if err := db.Notify(ctx, tx, "agentmesh_test", payload); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := <-got; p != "committed" {
		t.Fatalf("first notification %q, want the committed one only", p)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Listen ended with %v", err)
	}
}

// TestListenResetsAfterTheServerRestarts: notifications sent while the
// listener was away are lost, so it must say when it is back.
func TestListenResetsAfterTheServerRestarts(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := open(t, url)
	resets := make(chan struct{}, 10)
	lost := make(chan error, 10)
	done := make(chan error, 1)
	go func() {
		done <- db.Listen(ctx, "agentmesh_test", store.Watcher{
			Reset: func() { resets <- struct{}{} },
			Lost:  func(err error) { lost <- err },
		})
	}()
	<-resets
	srv.Stop()
	if err := <-lost; err == nil {
		t.Fatal("lost connection reported without an error")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	<-resets
	cancel()
	<-done
}

func TestSQLiteStoreIsWAL(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "mesh.db"))
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
}

func TestPostgresErrorsNeverShowThePassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A socket directory that does not exist: the connection fails at once.
	_, err := store.Open(ctx, "postgres://mesh:s3cret@localhost/mesh?host="+t.TempDir())
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows the password: %v", err)
	}
	if got := store.Redact("postgres://u:pw@h/db?password=pw2"); strings.Contains(got, "pw") {
		t.Fatalf("Redact left a password: %s", got)
	}
}
