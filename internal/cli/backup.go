package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// The coordinator's data verbs: 'agentmesh coordinator backup', 'restore'
// and 'migrate'. The coordinator command itself runs the control plane;
// these are dispatched from runCoordinator by their first argument.
var coordinatorVerbs = []*subcommand{
	{
		name:  "backup",
		usage: "--data DIR [--db postgres://...] --out FILE",
		short: "write one consistent snapshot of the coordinator's database to a file",
		long: `Copies every table (registry, auth keys, nodes, policies with their history, the audit trail
with its checkpoints and prune point) as of one instant, while the coordinator keeps running and
writing. FILE (mode 600, must not exist) is gzip'd JSON lines with a header naming the format
version, the source database and its schema versions; restore refuses a file that was cut short
or damaged.

On PostgreSQL (--db) the CA and audit signing keys are in the backup, sealed with the database
key: keep the key apart from the backups, as the backup alone cannot mint a certificate.

On SQLite the key files DIR/ca.crt, DIR/ca.key and DIR/audit.key (or --audit-key's file) are
NOT in the backup, on purpose: whoever holds the backup of the trail must not also hold the key
that signs it. Back them up apart, once; they do not change.

Examples:
  agentmesh coordinator backup --data ./mesh --out mesh-2026-01-31.backup
  agentmesh coordinator backup --data ./c1 --db postgres://mesh@db.internal/mesh --out mesh.backup`,
		flags: func(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
			data := fs.String("data", "", "the coordinator's data `DIR` (its SQLite database is DIR/db/mesh.db)")
			db := fs.String("db", "", "PostgreSQL `URL` to back up instead of the SQLite database")
			out := fs.String("out", "", "backup `FILE` to write (must not exist)")
			return func(ctx context.Context, pos []string) error {
				if err := wantArgs(pos); err != nil {
					return err
				}
				if *out == "" || (*data == "" && *db == "") {
					return usagef("--out FILE and --data DIR (or --db URL) are required")
				}
				sum, err := engine.BackupToFile(ctx, engine.BackupConfig{DataDir: *data, Database: *db}, *out)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "backup of the %s database written to %s\n", sum.Dialect, *out)
				printCopied(env.Stdout, sum, "NOT in the backup (back them up apart; restore needs them)")
				return nil
			}
		},
	},
	{
		name:  "restore",
		usage: "--in FILE --data DIR [--db postgres://...]",
		short: "restore a backup into an empty database",
		long: `Writes a backup into an empty database of the kind it was taken from: the SQLite database
of data directory DIR (created if needed; locked while restoring), or the PostgreSQL database
--db names. A database holding any agentmesh table is refused, naming the tables. This
agentmesh's schema migrations are applied first; a backup of a newer schema is refused. Nothing
is written unless the whole file reads back intact.

A backup of PostgreSQL cannot be restored into SQLite, nor the reverse: to move an SQLite mesh to
PostgreSQL, restore it into a data directory, then run 'agentmesh coordinator migrate'.

On SQLite, put the key files (ca.crt, ca.key, audit.key) back into DIR from their own backup
before starting the coordinator; restore names those still missing. On PostgreSQL the sealed keys
come back with the backup and open with the same database key.

Examples:
  agentmesh coordinator restore --in mesh.backup --data ./mesh-restored
  agentmesh coordinator restore --in mesh.backup --db postgres://mesh@db.internal/mesh2`,
		flags: func(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
			in := fs.String("in", "", "backup `FILE` to restore")
			data := fs.String("data", "", "data `DIR` to restore an SQLite backup into (not used with --db)")
			db := fs.String("db", "", "empty PostgreSQL database `URL` to restore a PostgreSQL backup into")
			return func(ctx context.Context, pos []string) error {
				if err := wantArgs(pos); err != nil {
					return err
				}
				if *in == "" || (*data == "" && *db == "") {
					return usagef("--in FILE and --data DIR (or --db URL) are required")
				}
				sum, err := engine.RestoreFromFile(ctx, engine.RestoreConfig{DataDir: *data, Database: *db}, *in)
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "restored a backup of %s (taken %s) into the %s database\n", *in, sum.Created.Format("2006-01-02 15:04:05Z07:00"), sum.Dialect)
				printCopied(env.Stdout, sum, "missing (restore them from the key backup before starting the coordinator)")
				return nil
			}
		},
	},
	{
		name:  "migrate",
		usage: "--data DIR --db postgres://... [--database-key FILE] [--audit-key FILE]",
		short: "copy an SQLite data directory into an empty PostgreSQL database",
		long: `Copies the stopped coordinator's data directory DIR (locked while copying, as the coordinator
locks it) into an empty PostgreSQL database: the registry, auth keys, nodes, policies with their
history, the whole audit trail with its chain, checkpoints and prune point, and the CA and audit
signing key files, sealed into the database with the database key (make one with 'agentmesh
coordinator keygen'). Then it verifies the audit trail on both sides with the same public key and
prints both reports; any difference fails the command (do not use the database then).

Coordinators started on the database afterwards have the same CA and audit key: nodes keep their
certificates and renew them there; 'audit verify' names the same key.

Example:
  agentmesh coordinator migrate --data ./mesh --db postgres://mesh@db.internal/mesh --database-key db.key`,
		flags: func(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
			data := fs.String("data", "", "the SQLite coordinator's data `DIR` (its coordinator stopped)")
			db := fs.String("db", "", "empty PostgreSQL database `URL` to copy into")
			dbKey := fs.String("database-key", "", "`FILE` holding the key that seals the CA and audit keys (or set AGENTMESH_DATABASE_KEY)")
			auditKey := fs.String("audit-key", "", "the audit signing key `FILE`, if the coordinator ran with --audit-key (default DIR/audit.key)")
			return func(ctx context.Context, pos []string) error {
				if err := wantArgs(pos); err != nil {
					return err
				}
				if *data == "" || *db == "" {
					return usagef("--data DIR and --db postgres://... are required")
				}
				rep, err := engine.Migrate(ctx, engine.MigrateConfig{DataDir: *data, Database: *db, DatabaseKeyFile: *dbKey, AuditKeyFile: *auditKey})
				if rep != nil {
					fmt.Fprintf(env.Stdout, "copied %s into PostgreSQL\n", *data)
					printTables(env.Stdout, rep.Tables)
					fmt.Fprintf(env.Stdout, "CA fingerprint:  sha256:%s (sealed into the database)\n", rep.CAFingerprint)
					fmt.Fprintf(env.Stdout, "audit key:       sha256:%s (sealed into the database)\n", rep.AuditKeyFingerprint)
					fmt.Fprintf(env.Stdout, "SQLite trail:\n  %s\n", strings.Join(rep.Source.Lines(), "\n  "))
					fmt.Fprintf(env.Stdout, "PostgreSQL trail:\n  %s\n", strings.Join(rep.Target.Lines(), "\n  "))
				}
				if errors.Is(err, engine.ErrMigrateVerify) {
					fmt.Fprintf(env.Stderr, "migrate: %v: the reports above differ or fail; do not start coordinators on this database\n", err)
					return errSilent
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, "both trails verify alike; next: start coordinators with the same --db and --database-key (each with a data directory of its own)")
				return nil
			}
		},
	},
}

// printCopied prints how many rows of each table were copied, and the key
// files left out under leftOut.
func printCopied(w io.Writer, sum *engine.BackupSummary, leftOut string) {
	printTables(w, sum.Tables)
	fmt.Fprintf(w, "  %-18s %d rows\n", "total", sum.Rows)
	if len(sum.LeftOut) > 0 {
		fmt.Fprintf(w, "%s: %s\n", leftOut, strings.Join(sum.LeftOut, ", "))
	}
}

func printTables(w io.Writer, tables []engine.TableCount) {
	for _, t := range tables {
		fmt.Fprintf(w, "  %-18s %d rows\n", t.Table, t.Rows)
	}
}

// coordinatorVerb returns the data verb called name, or nil.
func coordinatorVerb(name string) *subcommand {
	for _, s := range coordinatorVerbs {
		if s.name == name {
			return s
		}
	}
	return nil
}
