package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

func TestREADMEListsTheCoordinatorDataVerbs(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range coordinatorVerbs {
		line := "agentmesh coordinator " + v.name + " " + v.usage
		if !strings.Contains(string(b), line) {
			t.Errorf("README's CLI reference lacks the usage line %q", line)
		}
		code, out, _ := run(t, nil, "coordinator", v.name, "--help")
		if code != 0 || !strings.Contains(out, "Usage: "+line) {
			t.Errorf("agentmesh coordinator %s --help: status %d, output lacks the usage line:\n%s", v.name, code, out)
		}
	}
}

func TestCoordinatorBackupWhileRunningThenRestoreFromTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "mesh")
	co, err := engine.StartCoordinator(context.Background(), engine.CoordinatorConfig{DataDir: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	file := filepath.Join(dir, "mesh.backup")

	code, out, errOut := run(t, nil, "coordinator", "backup", "--data", data, "--out", file)
	if code != 0 || !strings.Contains(out, "NOT in the backup") || !strings.Contains(out, filepath.Join(data, "audit.key")) {
		t.Fatalf("backup of a running coordinator: status %d\n%s%s", code, out, errOut)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 600", fi, err)
	}
	if code, _, errOut := run(t, nil, "coordinator", "backup", "--data", data, "--out", file); code != 1 || !strings.Contains(errOut, "exists") {
		t.Fatalf("backup over an existing file: status %d, %s", code, errOut)
	}

	restored := filepath.Join(dir, "restored")
	code, out, errOut = run(t, nil, "coordinator", "restore", "--in", file, "--data", restored)
	if code != 0 || !strings.Contains(out, "missing") || !strings.Contains(out, filepath.Join(restored, "ca.key")) {
		t.Fatalf("restore: status %d\n%s%s", code, out, errOut)
	}

	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.backup")
	if err := os.WriteFile(cut, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = run(t, nil, "coordinator", "restore", "--in", cut, "--data", filepath.Join(dir, "other"))
	if code != 1 || !strings.Contains(errOut, "not a complete agentmesh backup") {
		t.Fatalf("restore of a cut file: status %d, %s", code, errOut)
	}
}

func TestCoordinatorMigratePrintsBothTrailReports(t *testing.T) {
	srv := pgtest.Start(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "mesh")
	co, err := engine.StartCoordinator(context.Background(), engine.CoordinatorConfig{DataDir: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ca := co.CAFingerprint()
	co.Close()
	key, err := engine.NewDatabaseKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "db.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	db := srv.NewDatabase(t)
	code, out, errOut := run(t, nil, "coordinator", "migrate", "--data", data, "--db", db, "--database-key", keyFile)
	if code != 0 || !strings.Contains(out, "sha256:"+ca) || strings.Count(out, "audit trail intact") != 2 || !strings.Contains(out, "both trails verify alike") {
		t.Fatalf("migrate: status %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = run(t, nil, "coordinator", "migrate", "--data", data, "--db", db, "--database-key", keyFile)
	if code != 1 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("a second migrate into the same database: status %d, %s", code, errOut)
	}
}
