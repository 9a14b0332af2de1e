package coordinator_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

// The policies a populated mesh has, in order: three versions of history.
var backupPolicies = []string{
	`{"grants":[{"src":["*"],"dst":["*"],"tools":["read"]}]}`,
	`{"grants":[{"src":["*"],"dst":["*"],"tools":["read","write"]}]}`,
	`{"grants":[{"src":["*"],"dst":["*"],"tools":["*"]}]}`,
}

// joinTool joins a tool node named name through admin's coordinator and
// returns its state directory and a client of it.
func joinTool(t *testing.T, admin *controlclient.Client, name string, now func() time.Time) (string, *controlclient.Client) {
	t.Helper()
	key := coordinatortest.CreateKey(t, admin, controlapi.KeyCreateRequest{Kind: "tool"})
	dir := filepath.Join(t.TempDir(), name)
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: name, State: dir, Now: now}); err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	return dir, coordinatortest.NewClient(t, dir, now)
}

// shipEvents ships n events recorded by the tool node cl named name, in
// batches, starting at event number from.
func shipEvents(t *testing.T, cl *controlclient.Client, name string, from, n int, base time.Time) {
	t.Helper()
	dst := "spiffe://test.mesh/tool/" + name
	for i := 0; i < n; i += 250 {
		if err := cl.Send(context.Background(), eventsAt(dst, from+i, min(250, n-i), base)); err != nil {
			t.Fatalf("shipping events: %v", err)
		}
	}
}

// populate gives a coordinator auth keys, nodes, three policy versions
// and events audit events.
func populate(t *testing.T, admin *controlclient.Client, now func() time.Time, events int) {
	t.Helper()
	joinTool(t, admin, "files", now)
	_, ledger := joinTool(t, admin, "ledger", now)
	for _, doc := range backupPolicies {
		coordinatortest.ApplyPolicy(t, admin, doc)
	}
	shipEvents(t, ledger, "ledger", 0, events, now())
}

// verify asks the coordinator of admin to verify its trail.
func verify(t *testing.T, admin *controlclient.Client) audit.Report {
	t.Helper()
	var rep audit.Report
	if err := admin.Call(context.Background(), http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("audit verify failed:\n%s", rep)
	}
	return rep
}

// dump reads every agentmesh table of the database at target as sorted
// lines of text, one per row, to compare two databases (of either kind).
func dump(t *testing.T, target string) map[string][]string {
	t.Helper()
	db, err := store.Open(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables := []string{"meta", "authkeys", "nodes", "policies", "shadow_policies", "logins", "sso_tokens", "audit_events", "audit_checkpoints", "audit_prune", "secrets"}
	have, err := db.ExistingTables(context.Background(), tables)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, table := range have {
		out[table] = dumpTable(t, db.DB, table)
	}
	return out
}

func dumpTable(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query(`SELECT * FROM ` + table + ` ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []string
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var line []string
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = "x" + hex.EncodeToString(b)
			}
			line = append(line, fmt.Sprintf("%s=%v", strings.ToLower(cols[i]), v))
		}
		out = append(out, strings.Join(line, " "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameRows fails unless two dumps hold the same rows.
func sameRows(t *testing.T, want, got map[string][]string) {
	t.Helper()
	for table, rows := range want {
		if !slices.Equal(rows, got[table]) {
			t.Errorf("table %s: %d rows restored, want %d; first difference:\n%s", table, len(got[table]), len(rows), firstDiff(rows, got[table]))
		}
	}
	for table := range got {
		if _, ok := want[table]; !ok {
			t.Errorf("table %s was not in the original", table)
		}
	}
}

func firstDiff(a, b []string) string {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return fmt.Sprintf("want %q\n got %q", at(a, i), at(b, i))
		}
	}
	return "none"
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

func backupOf(t *testing.T, cfg coordinator.BackupConfig) ([]byte, *coordinator.BackupSummary) {
	t.Helper()
	var buf bytes.Buffer
	sum, err := coordinator.Backup(context.Background(), cfg, &buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), sum
}

func copyKeyFiles(t *testing.T, from, to string) {
	t.Helper()
	for _, f := range []string{"ca.crt", "ca.key", "audit.key"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBackupAndRestoreKeepEveryRowOnSQLite(t *testing.T) {
	m := startMesh(t)
	populate(t, m.admin, m.clock.Now, 600)
	before := verify(t, m.admin)
	data := m.data
	m.stop()

	file, sum := backupOf(t, coordinator.BackupConfig{DataDir: data})
	if sum.Dialect != "sqlite" || sum.Rows == 0 || len(sum.LeftOut) != 3 {
		t.Fatalf("backup summary %+v: want sqlite rows and the three key files left out", sum)
	}
	if bytes.Contains(file, []byte("PRIVATE KEY")) {
		t.Fatal("the compressed backup holds a private key in the clear")
	}
	restored := filepath.Join(t.TempDir(), "restored")
	rs, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: restored}, bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if rs.Rows != sum.Rows || len(rs.LeftOut) != 3 {
		t.Fatalf("restored %d rows (backup %d), missing keys %v: want all rows and the three key files missing", rs.Rows, sum.Rows, rs.LeftOut)
	}
	sameRows(t, dump(t, coordinator.DatabasePath(data)), dump(t, coordinator.DatabasePath(restored)))

	copyKeyFiles(t, data, restored)
	co, err := coordinator.Start(context.Background(), coordinator.Config{DataDir: restored, Listen: "127.0.0.1:0", Now: m.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	after := verify(t, coordinatortest.NewClient(t, co.AdminDir(), m.clock.Now))
	if after.Events < before.Events || after.FirstSeq != before.FirstSeq {
		t.Fatalf("restored trail verifies %d events from %d, the original %d from %d", after.Events, after.FirstSeq, before.Events, before.FirstSeq)
	}
}

// startOn starts a coordinator on the PostgreSQL database db.
func startOn(t *testing.T, db string, key *sealed.Key) (*coordinator.Coordinator, *controlclient.Client) {
	t.Helper()
	co, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(t.TempDir(), "c"), Database: db, DatabaseKey: key, Listen: "127.0.0.1:0", TrustDomain: "test.mesh",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { co.Close() })
	return co, coordinatortest.NewClient(t, co.AdminDir(), nil)
}

func TestBackupAndRestoreKeepEveryRowOnPostgres(t *testing.T) {
	srv := pgtest.Shared(t)
	m := startShared(t, srv, 1)
	populate(t, m.admin[0], time.Now, 600)
	verify(t, m.admin[0])
	ca, ak := m.cos[0].CAFingerprint(), m.cos[0].AuditKeyFingerprint()
	m.cos[0].Close()

	file, sum := backupOf(t, coordinator.BackupConfig{Database: m.db})
	if sum.Dialect != "postgresql" || len(sum.LeftOut) != 0 || !slices.ContainsFunc(sum.Tables, func(c coordinator.TableCount) bool { return c.Table == "secrets" && c.Rows == 2 }) {
		t.Fatalf("backup summary %+v: want the two sealed secrets in it", sum)
	}
	target := srv.NewDatabase(t)
	if _, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{Database: target}, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	sameRows(t, dump(t, m.db), dump(t, target))

	co, admin := startOn(t, target, m.key)
	if co.CAFingerprint() != ca || co.AuditKeyFingerprint() != ak {
		t.Fatal("the restored database has another CA or audit key")
	}
	verify(t, admin)
	// The identity sequence was moved past the restored checkpoints: a
	// new one is stored, and the trail still verifies.
	_, ledger := joinTool(t, admin, "late", nil)
	shipEvents(t, ledger, "late", 0, 10, time.Now())
	if rep := verify(t, admin); rep.SignedThrough != rep.LastSeq {
		t.Fatalf("after the restore no new checkpoint was stored (signed through %d, last event %d)", rep.SignedThrough, rep.LastSeq)
	}
}

// TestBackupWhileEventsAreAppendedIsConsistent takes a backup of each
// store while a node ships events as fast as it can: the copy is one
// snapshot, whose chain verifies.
func TestBackupWhileEventsAreAppendedIsConsistent(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgresql"}[pg], func(t *testing.T) {
			var (
				admin  *controlclient.Client
				bcfg   coordinator.BackupConfig
				target string
				key    *sealed.Key
			)
			if pg {
				srv := pgtest.Shared(t)
				m := startShared(t, srv, 1)
				admin, bcfg, target, key = m.admin[0], coordinator.BackupConfig{Database: m.db}, srv.NewDatabase(t), m.key
			} else {
				m := startMesh(t)
				admin, bcfg = m.admin, coordinator.BackupConfig{DataDir: m.data}
				t.Cleanup(m.stop)
			}
			_, ledger := joinTool(t, admin, "ledger", nil)
			shipEvents(t, ledger, "ledger", 0, 100, time.Now())

			stop := make(chan struct{})
			var wg sync.WaitGroup
			var shipErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 100; ; i += 50 {
					select {
					case <-stop:
						return
					default:
					}
					if err := ledger.Send(context.Background(), eventsAt("spiffe://test.mesh/tool/ledger", i, 50, time.Now())); err != nil {
						shipErr = err
						return
					}
				}
			}()
			file, sum := backupOf(t, bcfg)
			close(stop)
			wg.Wait()
			if shipErr != nil {
				t.Fatal(shipErr)
			}
			var restoredAdmin *controlclient.Client
			if pg {
				if _, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{Database: target}, bytes.NewReader(file)); err != nil {
					t.Fatal(err)
				}
				_, restoredAdmin = startOn(t, target, key)
			} else {
				dir := filepath.Join(t.TempDir(), "restored")
				if _, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: dir}, bytes.NewReader(file)); err != nil {
					t.Fatal(err)
				}
				copyKeyFiles(t, bcfg.DataDir, dir)
				co, err := coordinator.Start(context.Background(), coordinator.Config{DataDir: dir, Listen: "127.0.0.1:0"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { co.Close() })
				restoredAdmin = coordinatortest.NewClient(t, co.AdminDir(), nil)
			}
			rep := verify(t, restoredAdmin)
			if rep.Events < 100 {
				t.Fatalf("the backup (%d rows) verifies only %d events", sum.Rows, rep.Events)
			}
		})
	}
}

func TestMigrateMovesADataDirectoryIntoPostgresWithItsKeysAndTrail(t *testing.T) {
	srv := pgtest.Shared(t)
	clock := newClock()
	data := filepath.Join(t.TempDir(), "mesh")
	listen := "127.0.0.1:0"
	start := func(retention time.Duration) (*coordinator.Coordinator, *controlclient.Client) {
		t.Helper()
		co, err := coordinator.Start(context.Background(), coordinator.Config{
			DataDir: data, Listen: listen, TrustDomain: "test.mesh", Now: clock.Now, AuditRetention: retention,
		})
		if err != nil {
			t.Fatal(err)
		}
		listen = co.Addr().String()
		t.Cleanup(func() { co.Close() })
		return co, coordinatortest.NewClient(t, co.AdminDir(), clock.Now)
	}

	// 1000 events, signed at the stop; a start two hours later with one
	// hour's retention prunes them down to a signed prune point (the
	// clock then goes back, for the nodes' certificates to verify at
	// the wall clock's time); then 2000 more in two runs, each signed at
	// its stop.
	co, admin := start(0)
	_, early := joinTool(t, admin, "early", clock.Now)
	shipEvents(t, early, "early", 0, 1000, clock.Now())
	co.Close()
	clock.Advance(2 * time.Hour)
	co, _ = start(time.Hour)
	co.Close()
	clock.Advance(-2 * time.Hour)
	co, admin = start(0)
	ledgerDir, ledger := joinTool(t, admin, "ledger", clock.Now)
	for _, doc := range backupPolicies {
		coordinatortest.ApplyPolicy(t, admin, doc)
	}
	shipEvents(t, ledger, "ledger", 0, 1000, clock.Now())
	co.Close()
	co, admin = start(0)
	shipEvents(t, ledger, "ledger", 1000, 1000, clock.Now())
	before := verify(t, admin)
	if before.PrunedThrough == 0 || before.Checkpoints < 2 || before.Events < 2000 {
		t.Fatalf("the SQLite trail is not what the test needs: %+v", before)
	}
	ca, ak := co.CAFingerprint(), co.AuditKeyFingerprint()

	key, err := sealed.New([]byte(strings.Repeat("m", sealed.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	target := srv.NewDatabase(t)
	// The coordinator still holds the directory: migrate waits for none.
	if _, err := coordinator.Migrate(context.Background(), coordinator.MigrateConfig{DataDir: data, Database: target, DatabaseKey: key}); !errors.Is(err, dirlock.ErrInUse) {
		t.Fatalf("migrate beside a running coordinator: %v, want the data directory in use", err)
	}
	co.Close()
	want := dump(t, coordinator.DatabasePath(data))
	rep, err := coordinator.Migrate(context.Background(), coordinator.MigrateConfig{DataDir: data, Database: target, DatabaseKey: key, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Source.OK || rep.Source.Events != before.Events || rep.Target.Events != before.Events || rep.Target.PrunedThrough != rep.Source.PrunedThrough {
		t.Fatalf("migrate's verification: source %+v, target %+v", rep.Source, rep.Target)
	}
	if rep.CAFingerprint != ca || rep.AuditKeyFingerprint != ak {
		t.Fatalf("migrate reports CA %s and audit key %s, the coordinator had %s and %s", rep.CAFingerprint, rep.AuditKeyFingerprint, ca, ak)
	}
	got := dump(t, target)
	delete(got, "secrets")
	sameRows(t, want, got)

	// The PostgreSQL coordinator takes over the SQLite one's address, as
	// an operator would have it: nodes keep the address they joined.
	pco, err := coordinator.Start(context.Background(), coordinator.Config{
		DataDir: filepath.Join(t.TempDir(), "pg"), Database: target, DatabaseKey: key, Listen: listen, Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pco.Close()
	if pco.CAFingerprint() != ca || pco.AuditKeyFingerprint() != ak {
		t.Fatalf("on PostgreSQL: CA %s, audit key %s; want %s and %s", pco.CAFingerprint(), pco.AuditKeyFingerprint(), ca, ak)
	}
	padmin := coordinatortest.NewClient(t, pco.AdminDir(), clock.Now)
	after := verify(t, padmin)
	if after.Events != before.Events || after.PrunedThrough != before.PrunedThrough || after.FirstSeq != before.FirstSeq {
		t.Fatalf("on PostgreSQL the trail verifies as %+v, on SQLite it did as %+v", after, before)
	}
	var history []controlapi.PolicyVersion
	if err := padmin.Call(context.Background(), http.MethodGet, controlapi.PathHistory, nil, &history); err != nil {
		t.Fatal(err)
	}
	// The documents themselves are compared with the rest of the rows
	// above; the history answers from them.
	var versions []int64
	for _, v := range history {
		versions = append(versions, v.Version)
	}
	slices.Sort(versions)
	if !slices.Equal(versions, []int64{1, 2, 3}) {
		t.Fatalf("policy history on PostgreSQL has versions %v, want 1, 2, 3", versions)
	}
	// The node joined on SQLite renews its certificate with the
	// PostgreSQL coordinator: the same CA, the same registry.
	node := coordinatortest.NewClient(t, ledgerDir, clock.Now)
	if _, err := node.Renew(context.Background()); err != nil {
		t.Fatalf("a migrated node renews on PostgreSQL: %v", err)
	}
	// Its new events extend the migrated chain, and a new checkpoint
	// (past the copied ones' ids) signs them.
	shipEvents(t, node, "ledger", 2000, 10, clock.Now())
	if rep := verify(t, padmin); rep.SignedThrough != rep.LastSeq || rep.LastSeq <= after.LastSeq {
		t.Fatalf("after new events on PostgreSQL: %+v", rep)
	}
}

func TestRestoreRefusesADatabaseThatHoldsAgentmeshTables(t *testing.T) {
	m := startMesh(t)
	m.stop()
	file, _ := backupOf(t, coordinator.BackupConfig{DataDir: m.data})
	// The coordinator's own data directory is not empty.
	_, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: m.data}, bytes.NewReader(file))
	if !errors.Is(err, coordinator.ErrNotEmpty) || !strings.Contains(err.Error(), "authkeys") {
		t.Fatalf("restore over a mesh: %v, want ErrNotEmpty naming its tables", err)
	}

	srv := pgtest.Shared(t)
	target := srv.NewDatabase(t)
	sm := startShared(t, srv, 1)
	sm.cos[0].Close()
	pgFile, _ := backupOf(t, coordinator.BackupConfig{Database: sm.db})
	if _, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{Database: target}, bytes.NewReader(pgFile)); err != nil {
		t.Fatal(err)
	}
	_, err = coordinator.Restore(context.Background(), coordinator.RestoreConfig{Database: target}, bytes.NewReader(pgFile))
	if !errors.Is(err, coordinator.ErrNotEmpty) || !strings.Contains(err.Error(), "audit_events") {
		t.Fatalf("second restore into one database: %v, want ErrNotEmpty naming its tables", err)
	}
	// A backup goes back into the kind of database it came from.
	_, err = coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: filepath.Join(t.TempDir(), "x")}, bytes.NewReader(pgFile))
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("a PostgreSQL backup into SQLite: %v, want a refusal pointing to migrate", err)
	}
}

// rewrite decompresses a backup, lets edit change its lines and
// compresses it again.
func rewrite(t *testing.T, file []byte, edit func(lines []string) []string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	lines := edit(strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n"))
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(strings.Join(lines, "\n") + "\n"))
	zw.Close()
	return buf.Bytes()
}

func TestRestoreRefusesACutOrDamagedBackupAndWritesNothing(t *testing.T) {
	m := startMesh(t)
	populate(t, m.admin, m.clock.Now, 300)
	m.stop()
	file, _ := backupOf(t, coordinator.BackupConfig{DataDir: m.data})
	damaged := bytes.Clone(file)
	damaged[len(damaged)/2] ^= 0xff
	cases := map[string][]byte{
		"cut in half":           file[:len(file)/2],
		"cut before gzip's end": file[:len(file)-4],
		"a byte flipped":        damaged,
		"not gzip":              []byte("meta,authkeys\n"),
		"empty":                 nil,
		"no trailer":            rewrite(t, file, func(l []string) []string { return l[:len(l)-1] }),
		"a row dropped": rewrite(t, file, func(l []string) []string {
			i := slices.IndexFunc(l, func(s string) bool { return strings.HasPrefix(s, "[") })
			return slices.Delete(l, i, i+1)
		}),
		"another format": rewrite(t, file, func(l []string) []string {
			l[0] = strings.Replace(l[0], "agentmesh-backup", "other", 1)
			return l
		}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "restored")
			_, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: dir}, bytes.NewReader(b))
			if !errors.Is(err, coordinator.ErrBadBackup) {
				t.Fatalf("restore: %v, want ErrBadBackup", err)
			}
			if _, statErr := os.Stat(coordinator.DatabasePath(dir)); statErr == nil {
				for table, rows := range dump(t, coordinator.DatabasePath(dir)) {
					if len(rows) > 0 {
						t.Errorf("a refused restore left %d rows in %s", len(rows), table)
					}
				}
			}
		})
	}
	newer := rewrite(t, file, func(l []string) []string {
		l[0] = regexp.MustCompile(`"registry":\d+`).ReplaceAllString(l[0], `"registry":99`)
		return l
	})
	_, err := coordinator.Restore(context.Background(), coordinator.RestoreConfig{DataDir: filepath.Join(t.TempDir(), "n")}, bytes.NewReader(newer))
	if !errors.Is(err, store.ErrSchemaNewer) {
		t.Fatalf("a backup of a newer schema: %v, want ErrSchemaNewer", err)
	}
}
