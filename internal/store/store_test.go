package store

import (
	"context"
	"path/filepath"
	"testing"
)

func TestMigrateAppliesEachStepOnceAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mesh.db")
	steps := []Migration{
		{1, `CREATE TABLE t (x INTEGER)`},
		{2, `INSERT INTO t VALUES (1)`},
	}
	for range 2 {
		db, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := Migrate(ctx, db, "test", steps); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM t`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("rows = %d, want 1 (a step ran twice)", n)
		}
		db.Close()
	}
}

func TestMigrateRejectsMisnumberedSteps(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "mesh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := Migrate(context.Background(), db, "x", []Migration{{2, `SELECT 1`}}); err == nil {
		t.Fatal("misnumbered migration accepted")
	}
}

func TestJournalModeIsWAL(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "mesh.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
}
