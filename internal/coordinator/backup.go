package coordinator

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/store"
)

// Backup, restore and migrate move the coordinator's tables as rows, the
// same way for both databases:
//
//   - Backup reads every table in one snapshot (store.BeginSnapshot), so
//     a coordinator may keep writing meanwhile: the copy is the database
//     as of one instant, its audit chain whole up to a head that verifies.
//   - A backup file is gzip'd JSON, one value a line: a header (format,
//     version, source database, schema versions), then per table a line
//     naming its columns and their types, one JSON array per row, and a
//     line with the table's row count; last a trailer with the total.
//     Integers are JSON numbers (read back exactly, as int64), BLOB/BYTEA
//     base64, text strings. gzip's checksum catches a damaged file; the
//     counts and the trailer catch a cut one; restore commits nothing
//     until both checked out.
//   - Restore and migrate write only into an empty database, in one
//     transaction after this agentmesh's migrations: rows of an older
//     schema fill the newer tables (new columns take their defaults); a
//     backup of a newer schema is refused.
//
// The signing keys follow the database's threat model (datadir.go,
// shared.go). On PostgreSQL they are rows of secrets, sealed with the
// database key, and a backup carries them as it carries any row: useless
// without the key, which is kept apart. On SQLite they are files beside
// the database directory (ca.crt, ca.key, audit.key) and a backup leaves
// them out on purpose: whoever holds the backup must not also hold the key
// that signs the trail it contains. The operator backs them up apart.

// The backup file's format name and version.
const (
	backupFormat  = "agentmesh-backup"
	backupVersion = 1
)

// backupTables are the coordinator's tables, in the order a backup holds
// them: registry (meta, authkeys, nodes, policies, shadow_policies, and
// people's logins and the ID tokens used, so that a restore neither signs
// people out nor lets a used token sign in again; delegations and revoked
// people, so that a restore forgets no revocation while a token it
// revoked may still be valid), audit, secrets and
// cluster. schema_versions is not among them: its content is the
// header's schema, and restore's own migrations write it. Approvals, tool
// reports and alert claims are transient views and left out (see their
// files).
var backupTables = []string{
	"meta", "authkeys", "nodes", "policies", "shadow_policies", "logins", "sso_tokens", "delegations", "revoked_users",
	"audit_events", "audit_checkpoints", "audit_prune",
	"secrets", "coordinators",
}

// keyFiles are the data directory's signing key files, which an SQLite
// backup leaves out (the audit key's path may be --audit-key instead).
var keyFiles = []string{"ca.crt", "ca.key", AuditKeyFile}

// ErrBadBackup says that a file is not a whole, undamaged backup.
var ErrBadBackup = errors.New("not a complete agentmesh backup")

// leftEmpty tells what a restore or migrate that failed after migrating
// the target leaves behind.
const leftEmpty = "the database now holds this agentmesh's empty tables: drop them, or use a new database, before another attempt"

// ErrNotEmpty refuses to restore or migrate into a database that holds
// agentmesh tables already.
var ErrNotEmpty = errors.New("the target database is not empty")

// The column types of a backup: how a value is written and read back.
const (
	colInt   = "int"
	colText  = "text"
	colBytes = "bytes"
)

// backupLine is one line of a backup other than a row: the header (Format
// set), a table's start (Table set), a table's end or the trailer (End
// set; "" ends the backup).
type backupLine struct {
	Format  string         `json:"format,omitempty"`
	Version int            `json:"version,omitempty"`
	Dialect string         `json:"dialect,omitempty"`
	Schema  map[string]int `json:"schema,omitempty"`
	Created *time.Time     `json:"created,omitempty"`

	Table   string   `json:"table,omitempty"`
	Columns []string `json:"columns,omitempty"`
	Types   []string `json:"types,omitempty"`

	End  *string `json:"end,omitempty"`
	Rows int64   `json:"rows"`
}

// TableCount is how many rows of a table were copied.
type TableCount struct {
	Table string `json:"table"`
	Rows  int64  `json:"rows"`
}

// BackupConfig says which database to back up.
type BackupConfig struct {
	// DataDir is the coordinator's data directory (its SQLite database
	// is DATA/db/mesh.db). It is not locked: a running coordinator keeps
	// it, and the backup reads beside it.
	DataDir string
	// Database is the PostgreSQL URL, or empty for SQLite.
	Database string
	// Now is the clock (time.Now).
	Now func() time.Time
}

// BackupSummary says what a backup holds, or what was restored.
type BackupSummary struct {
	Dialect string         `json:"dialect"`
	Schema  map[string]int `json:"schema"`
	Created time.Time      `json:"created"`
	Tables  []TableCount   `json:"tables"`
	Rows    int64          `json:"rows"`
	// LeftOut are the key files an SQLite backup does not hold (none for
	// PostgreSQL, whose sealed keys are rows of the backup): after
	// Backup, those the operator must back up apart; after Restore,
	// those not yet in the data directory, which the operator restores
	// from that other backup before starting the coordinator.
	LeftOut []string `json:"left_out,omitempty"`
}

// Backup writes one consistent snapshot of the coordinator's database to
// w. It may run while the coordinator runs.
func Backup(ctx context.Context, cfg BackupConfig, w io.Writer) (*BackupSummary, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	db, err := openExisting(ctx, cfg.DataDir, cfg.Database)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	tx, err := db.BeginSnapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer tx.Rollback()
	schema, err := schemaVersions(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	sum := &BackupSummary{Dialect: db.Dialect.String(), Schema: schema, Created: cfg.Now().UTC()}
	if db.Dialect == store.SQLite {
		sum.LeftOut = keyFileHint(cfg.DataDir)
	}
	zw := gzip.NewWriter(w)
	bw := &backupWriter{enc: json.NewEncoder(zw)}
	if err := bw.enc.Encode(backupLine{Format: backupFormat, Version: backupVersion, Dialect: sum.Dialect, Schema: schema, Created: &sum.Created}); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	tables, err := db.ExistingTables(ctx, backupTables)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := dumpTables(ctx, tx, tables, bw); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	end := ""
	if err := bw.enc.Encode(backupLine{End: &end, Rows: bw.total}); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	sum.Tables, sum.Rows = bw.counts, bw.total
	return sum, nil
}

// keyFileHint names the key files of an SQLite data directory that a
// backup leaves out.
func keyFileHint(dir string) []string {
	var out []string
	for _, f := range keyFiles {
		out = append(out, filepath.Join(dir, f))
	}
	return out
}

// openExisting opens the coordinator's database without creating it: the
// PostgreSQL database at target, or the SQLite file of data directory dir.
func openExisting(ctx context.Context, dir, target string) (*store.DB, error) {
	if store.IsPostgres(target) {
		return store.OpenPostgres(ctx, target)
	}
	if target != "" {
		return nil, fmt.Errorf("--db %s: want a postgres:// URL, or nothing for the SQLite database in the data directory", store.Redact(target))
	}
	if dir == "" {
		return nil, errors.New("no data directory given (--data DIR)")
	}
	path := DatabasePath(dir)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no coordinator database at %s (start the coordinator on %s once first): %w", path, dir, err)
	}
	return store.OpenSQLite(path)
}

// schemaVersions reads every owner's schema version.
func schemaVersions(ctx context.Context, tx *sql.Tx) (map[string]int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT owner, version FROM schema_versions`)
	if err != nil {
		return nil, fmt.Errorf("schema versions: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var owner string
		var v int
		if err := rows.Scan(&owner, &v); err != nil {
			return nil, err
		}
		out[owner] = v
	}
	return out, rows.Err()
}

// rowSink receives tables row by row: a backup file, or a database being
// restored or migrated into. Values are nil, int64, string or []byte.
type rowSink interface {
	table(name string, columns, types []string) error
	row(values []any) error
	endTable(name string, rows int64) error
}

// dumpTables reads tables from the snapshot tx into sink, each in primary
// key order (every table's first column is its key), so that the audit
// chain is written in seq order.
func dumpTables(ctx context.Context, tx *sql.Tx, tables []string, sink rowSink) error {
	for _, t := range tables {
		if !slices.Contains(backupTables, t) {
			return fmt.Errorf("unknown table %s", t)
		}
		if err := dumpTable(ctx, tx, t, sink); err != nil {
			return fmt.Errorf("table %s: %w", t, err)
		}
	}
	return nil
}

func dumpTable(ctx context.Context, tx *sql.Tx, table string, sink rowSink) error {
	// table is one of backupTables, never input.
	rows, err := tx.QueryContext(ctx, `SELECT * FROM `+table+` ORDER BY 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.ColumnTypes()
	if err != nil {
		return err
	}
	names := make([]string, len(cols))
	types := make([]string, len(cols))
	for i, c := range cols {
		names[i] = strings.ToLower(c.Name())
		if types[i], err = columnType(c.DatabaseTypeName()); err != nil {
			return fmt.Errorf("column %s: %w", c.Name(), err)
		}
	}
	if err := sink.table(table, names, types); err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		out := make([]any, len(vals))
		for i, v := range vals {
			if out[i], err = normalise(v, types[i]); err != nil {
				return fmt.Errorf("column %s: %w", names[i], err)
			}
		}
		if err := sink.row(out); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return sink.endTable(table, n)
}

// columnType maps a column's declared type, as SQLite (INTEGER, TEXT,
// BLOB) or PostgreSQL (INT4, INT8, TEXT, BYTEA) names it, to a backup
// column type.
func columnType(decl string) (string, error) {
	d := strings.ToUpper(decl)
	switch {
	case strings.Contains(d, "INT"):
		return colInt, nil
	case d == "BLOB" || d == "BYTEA":
		return colBytes, nil
	case d == "TEXT":
		return colText, nil
	}
	return "", fmt.Errorf("type %q is not one a backup holds", decl)
}

// normalise checks that a value read from the database is of its column's
// type, as nil, int64, string or []byte.
func normalise(v any, typ string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case colInt:
		if i, ok := v.(int64); ok {
			return i, nil
		}
	case colText:
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		}
	case colBytes:
		if b, ok := v.([]byte); ok {
			return bytes.Clone(b), nil
		}
	}
	return nil, fmt.Errorf("a %T in a %s column", v, typ)
}

// backupWriter is the sink that writes a backup file.
type backupWriter struct {
	enc    *json.Encoder
	counts []TableCount
	total  int64
}

func (w *backupWriter) table(name string, columns, types []string) error {
	return w.enc.Encode(backupLine{Table: name, Columns: columns, Types: types})
}

// row writes the values as a JSON array; encoding/json writes a []byte as
// base64 and an int64 as its exact digits.
func (w *backupWriter) row(values []any) error { return w.enc.Encode(values) }

func (w *backupWriter) endTable(name string, rows int64) error {
	w.counts = append(w.counts, TableCount{Table: name, Rows: rows})
	w.total += rows
	return w.enc.Encode(backupLine{End: &name, Rows: rows})
}

// backupReader reads a backup file.
type backupReader struct {
	dec    *json.Decoder
	header backupLine
}

// openBackup reads and checks a backup's header.
func openBackup(r io.Reader) (*backupReader, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	dec := json.NewDecoder(zr)
	dec.UseNumber()
	br := &backupReader{dec: dec}
	if err := dec.Decode(&br.header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadBackup, err)
	}
	h := br.header
	if h.Format != backupFormat {
		return nil, fmt.Errorf("%w: the header does not name the format %s", ErrBadBackup, backupFormat)
	}
	if h.Version != backupVersion {
		return nil, fmt.Errorf("%w: format version %d, this agentmesh reads version %d", ErrBadBackup, h.Version, backupVersion)
	}
	if h.Dialect != store.SQLite.String() && h.Dialect != store.Postgres.String() {
		return nil, fmt.Errorf("%w: unknown source database %q", ErrBadBackup, h.Dialect)
	}
	return br, nil
}

// copyTo feeds every table of the backup to sink and checks each table's
// count, the trailer and the end of the file (where gzip checks its
// checksum). It returns the number of rows.
func (br *backupReader) copyTo(sink rowSink) (int64, error) {
	var (
		total int64
		cur   *backupLine // the table being read
		n     int64
		seen  = map[string]bool{}
	)
	for {
		var raw json.RawMessage
		if err := br.dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the file ends before the backup does (cut short?)")
			}
			return 0, fmt.Errorf("%w: %v", ErrBadBackup, err)
		}
		if len(raw) > 0 && raw[0] == '[' {
			if cur == nil {
				return 0, fmt.Errorf("%w: a row outside any table", ErrBadBackup)
			}
			vals, err := decodeRow(raw, cur.Types)
			if err != nil {
				return 0, fmt.Errorf("%w: table %s row %d: %v", ErrBadBackup, cur.Table, n+1, err)
			}
			if err := sink.row(vals); err != nil {
				return 0, fmt.Errorf("table %s row %d: %w", cur.Table, n+1, err)
			}
			n++
			continue
		}
		var l backupLine
		if err := json.Unmarshal(raw, &l); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadBackup, err)
		}
		switch {
		case l.Table != "":
			if cur != nil {
				return 0, fmt.Errorf("%w: table %s starts before %s ended", ErrBadBackup, l.Table, cur.Table)
			}
			if !slices.Contains(backupTables, l.Table) || seen[l.Table] {
				return 0, fmt.Errorf("%w: unexpected table %q", ErrBadBackup, l.Table)
			}
			if len(l.Columns) == 0 || len(l.Columns) != len(l.Types) {
				return 0, fmt.Errorf("%w: table %s: %d columns and %d types", ErrBadBackup, l.Table, len(l.Columns), len(l.Types))
			}
			seen[l.Table] = true
			if err := sink.table(l.Table, l.Columns, l.Types); err != nil {
				return 0, fmt.Errorf("table %s: %w", l.Table, err)
			}
			cur, n = &l, 0
		case l.End != nil && *l.End != "":
			if cur == nil || cur.Table != *l.End {
				return 0, fmt.Errorf("%w: end of table %q that was not begun", ErrBadBackup, *l.End)
			}
			if l.Rows != n {
				return 0, fmt.Errorf("%w: table %s has %d rows, its end says %d", ErrBadBackup, cur.Table, n, l.Rows)
			}
			if err := sink.endTable(cur.Table, n); err != nil {
				return 0, fmt.Errorf("table %s: %w", cur.Table, err)
			}
			total += n
			cur = nil
		case l.End != nil:
			if cur != nil {
				return 0, fmt.Errorf("%w: the backup ends inside table %s", ErrBadBackup, cur.Table)
			}
			if l.Rows != total {
				return 0, fmt.Errorf("%w: %d rows read, the trailer says %d", ErrBadBackup, total, l.Rows)
			}
			// Read to the end: gzip checks its checksum there, and
			// nothing may follow the trailer.
			if err := br.dec.Decode(&raw); !errors.Is(err, io.EOF) {
				if err == nil {
					err = errors.New("data after the trailer")
				}
				return 0, fmt.Errorf("%w: %v", ErrBadBackup, err)
			}
			return total, nil
		default:
			return 0, fmt.Errorf("%w: a line that is neither a table, a row nor an end", ErrBadBackup)
		}
	}
}

// decodeRow reads one row's JSON array as the types say.
func decodeRow(raw json.RawMessage, types []string) ([]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var vals []any
	if err := dec.Decode(&vals); err != nil {
		return nil, err
	}
	if len(vals) != len(types) {
		return nil, fmt.Errorf("%d values for %d columns", len(vals), len(types))
	}
	for i, v := range vals {
		if v == nil {
			continue
		}
		var ok bool
		switch types[i] {
		case colInt:
			var num json.Number
			if num, ok = v.(json.Number); ok {
				n, err := strconv.ParseInt(string(num), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("column %d: %v", i+1, err)
				}
				vals[i] = n
			}
		case colText:
			_, ok = v.(string)
		case colBytes:
			var s string
			if s, ok = v.(string); ok {
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return nil, fmt.Errorf("column %d: %v", i+1, err)
				}
				vals[i] = b
			}
		default:
			return nil, fmt.Errorf("column %d: unknown type %q", i+1, types[i])
		}
		if !ok {
			return nil, fmt.Errorf("column %d: a %T where a %s belongs", i+1, v, types[i])
		}
	}
	return vals, nil
}

// insertBatch is how many rows one INSERT writes: one statement per row
// would make a restore of a long trail one round trip per event. The
// widest table (audit_events, 13 columns) takes 2,600 parameters, well
// within both databases' limits (SQLite 32,766; PostgreSQL 65,535).
const insertBatch = 200

// inserter is the sink that writes rows into a database, inside tx, a
// batch of rows per INSERT.
type inserter struct {
	ctx     context.Context
	tx      *sql.Tx
	name    string // of the table being written
	columns []string
	pending []any // the values of the rows not yet inserted, row after row
	counts  []TableCount
	total   int64
}

func (in *inserter) table(name string, columns, types []string) error {
	// name is one of backupTables (checked by the caller); the columns
	// are checked against the table's own before they reach SQL.
	have, err := tableColumns(in.ctx, in.tx, name)
	if err != nil {
		return fmt.Errorf("this agentmesh's schema has no table %s (from a newer agentmesh?): %w", name, err)
	}
	seen := map[string]bool{}
	for _, c := range columns {
		if !slices.Contains(have, c) || seen[c] {
			return fmt.Errorf("column %q is not one of this agentmesh's (%s)", c, strings.Join(have, ", "))
		}
		seen[c] = true
	}
	in.name, in.columns, in.pending = name, columns, in.pending[:0]
	return nil
}

func (in *inserter) row(values []any) error {
	in.pending = append(in.pending, values...)
	if len(in.pending) >= insertBatch*len(in.columns) {
		return in.flush()
	}
	return nil
}

// flush inserts the pending rows with one statement.
func (in *inserter) flush() error {
	if len(in.pending) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO ` + in.name + ` (` + strings.Join(in.columns, ", ") + `) VALUES `)
	for i := range in.pending {
		switch {
		case i == 0:
			q.WriteString("(")
		case i%len(in.columns) == 0:
			q.WriteString("), (")
		default:
			q.WriteString(", ")
		}
		q.WriteString("$" + strconv.Itoa(i+1))
	}
	q.WriteString(")")
	_, err := in.tx.ExecContext(in.ctx, q.String(), in.pending...)
	in.pending = in.pending[:0]
	return err
}

func (in *inserter) endTable(name string, rows int64) error {
	if err := in.flush(); err != nil {
		return err
	}
	in.counts = append(in.counts, TableCount{Table: name, Rows: rows})
	in.total += rows
	return nil
}

// tableColumns lists a table's columns, lower case.
func tableColumns(ctx context.Context, tx *sql.Tx, table string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT * FROM `+table+` WHERE 1 = 0`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	for i := range cols {
		cols[i] = strings.ToLower(cols[i])
	}
	return cols, rows.Err()
}

// schemas are the owners' migrations on dialect d: what restore and
// migrate apply, and what a backup's schema versions are checked against.
func schemas(d store.Dialect) map[string][]store.Migration {
	m := map[string][]store.Migration{"registry": registryMigrations, "audit": nil}
	if d == store.Postgres {
		m["secrets"], m["cluster"] = secretsMigrations, clusterMigrations
	}
	return m
}

// prepareEmpty refuses a database holding any agentmesh table and applies
// this agentmesh's migrations to it.
func prepareEmpty(ctx context.Context, db *store.DB) error {
	have, err := db.ExistingTables(ctx, append(slices.Clone(backupTables), "schema_versions"))
	if err != nil {
		return err
	}
	if len(have) > 0 {
		return fmt.Errorf("%w: it holds agentmesh tables (%s); restore and migrate write only into an empty database", ErrNotEmpty, strings.Join(have, ", "))
	}
	for owner, steps := range schemas(db.Dialect) {
		if owner == "audit" {
			continue
		}
		if err := store.Migrate(ctx, db, owner, steps); err != nil {
			return err
		}
	}
	// The audit store applies its migrations when made; it is made here
	// for them only, with a key that signs nothing and is dropped.
	_, throwaway, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if _, err := auditstore.New(ctx, db, throwaway, auditstore.Options{}); err != nil {
		return err
	}
	return nil
}

// checkSchema refuses a backup whose schema is newer than have (each
// owner's version in this agentmesh; an owner missing from have is one it
// does not keep on this database).
func checkSchema(schema, have map[string]int, d store.Dialect) error {
	for owner, v := range schema {
		h, ok := have[owner]
		if !ok {
			return fmt.Errorf("the backup holds tables of %q, which this agentmesh does not keep on %s", owner, d)
		}
		if v > h {
			return fmt.Errorf("%w: the backup's %s schema is at version %d, this agentmesh knows %d; restore it with the newer agentmesh", store.ErrSchemaNewer, owner, v, h)
		}
	}
	return nil
}

// knownSchema is each owner's newest version on d as far as this package
// sees its migrations; the audit store's are its own, so it counts as any
// version here and is checked against the migrated database after.
func knownSchema(d store.Dialect) map[string]int {
	out := map[string]int{}
	for owner, steps := range schemas(d) {
		out[owner] = len(steps)
		if owner == "audit" {
			out[owner] = math.MaxInt
		}
	}
	return out
}

// RestoreConfig says where to restore a backup.
type RestoreConfig struct {
	// DataDir is the data directory of an SQLite coordinator (created if
	// needed, and locked while restoring). It is not used with Database.
	DataDir string
	// Database is the PostgreSQL URL, or empty for SQLite in DataDir.
	Database string
}

// Restore writes the backup r into an empty database of the same kind as
// the backup's source. Nothing is committed unless the whole backup reads
// back intact.
func Restore(ctx context.Context, cfg RestoreConfig, r io.Reader) (*BackupSummary, error) {
	br, err := openBackup(r)
	if err != nil {
		return nil, err
	}
	target := store.SQLite
	if store.IsPostgres(cfg.Database) {
		target = store.Postgres
	}
	if br.header.Dialect != target.String() {
		return nil, fmt.Errorf("this backup is of a %s database and the target is %s: restore a backup into the kind of database it was taken from (to move an SQLite data directory into PostgreSQL, restore it into a data directory, then run 'agentmesh coordinator migrate')", br.header.Dialect, target)
	}
	if err := checkSchema(br.header.Schema, knownSchema(target), target); err != nil {
		return nil, err
	}
	var db *store.DB
	if target == store.SQLite {
		if cfg.Database != "" {
			return nil, fmt.Errorf("--db %s: want a postgres:// URL, or nothing for the SQLite database in the data directory", store.Redact(cfg.Database))
		}
		lock, err := lockDataDir(cfg.DataDir, "agentmesh coordinator restore")
		if err != nil {
			return nil, err
		}
		defer lock.Close()
		if db, err = openDatabase(ctx, cfg.DataDir, "", slog.New(slog.DiscardHandler)); err != nil {
			return nil, err
		}
	} else if db, err = store.OpenPostgres(ctx, cfg.Database); err != nil {
		return nil, err
	}
	defer db.Close()
	if err := prepareEmpty(ctx, db); err != nil {
		return nil, err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	have, err := schemaVersions(ctx, tx)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(br.header.Schema, have, target); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, leftEmpty)
	}
	in := &inserter{ctx: ctx, tx: tx}
	if _, err := br.copyTo(in); err != nil {
		return nil, fmt.Errorf("restore (no row was written; %s): %w", leftEmpty, err)
	}
	if err := finishCopy(ctx, tx, db.Dialect); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	sum := &BackupSummary{Dialect: br.header.Dialect, Schema: br.header.Schema, Tables: in.counts, Rows: in.total}
	if br.header.Created != nil {
		sum.Created = *br.header.Created
	}
	if target == store.SQLite {
		for _, f := range keyFileHint(cfg.DataDir) {
			if _, err := os.Stat(f); err != nil {
				sum.LeftOut = append(sum.LeftOut, f)
			}
		}
	}
	return sum, nil
}

// finishCopy is what a copy of rows with their keys needs before commit:
// PostgreSQL's identity sequence of audit_checkpoints is moved past the
// copied ids.
func finishCopy(ctx context.Context, tx *sql.Tx, d store.Dialect) error {
	return store.ResetIdentity(ctx, tx, d, "audit_checkpoints", "id")
}

// lockDataDir creates (mode 0700) and locks a data directory as the
// coordinator does (lockData), for a command that must not run beside a
// coordinator on it.
func lockDataDir(dir, command string) (*dirlock.Lock, error) {
	if dir == "" {
		return nil, errors.New("no data directory given (--data DIR)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if err := privateDir(dir); err != nil {
		return nil, fmt.Errorf("data directory %w", err)
	}
	return dirlock.Acquire(dir, "data directory", dirlock.Holder{Command: command, Since: time.Now()})
}

// MigrateConfig says what to migrate where.
type MigrateConfig struct {
	// DataDir is the SQLite coordinator's data directory, locked while
	// migrating: its coordinator must be stopped.
	DataDir string
	// AuditKeyFile is its audit key when not DATA/audit.key.
	AuditKeyFile string
	// Database is the URL of an empty PostgreSQL database.
	Database string
	// DatabaseKey seals the CA and audit key in Database; when nil it is
	// read from DatabaseKeyFile or the environment (sealed.Load).
	DatabaseKey     *sealed.Key
	DatabaseKeyFile string
	// Now is the clock (time.Now).
	Now func() time.Time
}

// MigrateReport says what was copied and how both trails verified.
type MigrateReport struct {
	Tables              []TableCount `json:"tables"`
	Rows                int64        `json:"rows"`
	CAFingerprint       string       `json:"ca_fingerprint"`
	AuditKeyFingerprint string       `json:"audit_key_fingerprint"`
	// Source and Target are auditstore.Verify's reports on the SQLite
	// trail and on its copy, with the same public key.
	Source audit.Report `json:"source"`
	Target audit.Report `json:"target"`
}

// ErrMigrateVerify says that the copied trail does not verify as the
// original does.
var ErrMigrateVerify = errors.New("the audit trail's copy does not verify as the original does")

// Migrate copies an SQLite data directory into an empty PostgreSQL
// database: every table, and the CA and audit key files sealed into
// secrets with the database key. It then verifies both trails with the
// audit key: a report that differs, or is not OK, fails (with both
// reports returned). The copy is committed before the verification, so a
// failed one leaves the database written: do not use it.
func Migrate(ctx context.Context, cfg MigrateConfig) (*MigrateReport, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if !store.IsPostgres(cfg.Database) {
		return nil, errors.New("migrate copies into PostgreSQL: give --db postgres://...")
	}
	key := cfg.DatabaseKey
	if key == nil {
		var err error
		if key, err = sealed.Load(cfg.DatabaseKeyFile); err != nil {
			return nil, err
		}
	}
	lock, err := lockDataDir(cfg.DataDir, "agentmesh coordinator migrate")
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	src, err := openExisting(ctx, cfg.DataDir, "")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	ca, caValue, err := caSecret(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	keyPath, err := (&Coordinator{cfg: Config{DataDir: cfg.DataDir, AuditKeyFile: cfg.AuditKeyFile}}).auditKeyPath()
	if err != nil {
		return nil, err
	}
	auditValue, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("the audit key (give --audit-key FILE if the coordinator ran with one): %w", err)
	}
	priv, err := loadOrCreateAuditKey(keyPath, false)
	if err != nil {
		return nil, err
	}
	pub := priv.Public().(ed25519.PublicKey)

	dst, err := store.OpenPostgres(ctx, cfg.Database)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	if err := prepareEmpty(ctx, dst); err != nil {
		return nil, err
	}
	in, err := copyDatabase(ctx, src, dst)
	if err != nil {
		return nil, fmt.Errorf("%w (no row was written; %s)", err, leftEmpty)
	}
	if err := storeSecrets(ctx, dst, key, cfg.Now(), map[string][]byte{secretCA: caValue, secretAudit: auditValue}); err != nil {
		return nil, err
	}
	rep := &MigrateReport{Tables: in.counts, Rows: in.total, CAFingerprint: ca.Fingerprint(), AuditKeyFingerprint: audit.KeyFingerprint(pub)}
	if rep.Source, err = auditstore.Verify(ctx, src, pub); err != nil {
		return rep, fmt.Errorf("verifying the SQLite trail: %w", err)
	}
	if rep.Target, err = auditstore.Verify(ctx, dst, pub); err != nil {
		return rep, fmt.Errorf("verifying the PostgreSQL trail: %w", err)
	}
	s, _ := json.Marshal(rep.Source)
	t, _ := json.Marshal(rep.Target)
	if !bytes.Equal(s, t) || !rep.Source.OK || !rep.Target.OK {
		return rep, ErrMigrateVerify
	}
	return rep, nil
}

// copyDatabase copies every table of src, from one snapshot, into the
// prepared, empty dst in one transaction.
func copyDatabase(ctx context.Context, src, dst *store.DB) (*inserter, error) {
	stx, err := src.BeginSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer stx.Rollback()
	if _, err := schemaVersions(ctx, stx); err != nil {
		return nil, err
	}
	tables, err := src.ExistingTables(ctx, backupTables)
	if err != nil {
		return nil, err
	}
	dtx, err := dst.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer dtx.Rollback()
	in := &inserter{ctx: ctx, tx: dtx}
	if err := dumpTables(ctx, stx, tables, in); err != nil {
		return nil, fmt.Errorf("copying: %w", err)
	}
	if err := finishCopy(ctx, dtx, dst.Dialect); err != nil {
		return nil, err
	}
	return in, dtx.Commit()
}

// caSecret loads the CA files of a data directory and returns the CA and
// the value sharedCA keeps: the certificate's PEM, then the key's.
func caSecret(dir string) (*pki.CA, []byte, error) {
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("the CA of %s: %w", dir, err)
	}
	certPEM, keyPEM, err := ca.PEM()
	if err != nil {
		return nil, nil, err
	}
	return ca, append(certPEM, keyPEM...), nil
}

// storeSecrets seals values into the secrets table.
func storeSecrets(ctx context.Context, db *store.DB, key *sealed.Key, now time.Time, values map[string][]byte) error {
	tx, err := db.BeginWrite(ctx, store.LockSecrets)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for name, v := range values {
		box, err := key.Seal(name, v)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO secrets(name, sealed, created_at) VALUES($1, $2, $3)`, name, box, now.UnixNano()); err != nil {
			return fmt.Errorf("sealing %s: %w", name, err)
		}
	}
	return tx.Commit()
}
