package coordinator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/store"
)

// registry is the coordinator's durable state: auth keys, nodes, policy
// versions and the netmap version counter. Every method is one transaction.
// It also keeps the committed set of nodes and the newest policy in memory
// (nodeset.go), which publish reads instead of the database.
type registry struct {
	db *store.DB
	// mu is held from each write of a node or a policy until the memory
	// copy has it, so that mem changes in commit order; and while a
	// publish copies mem.
	mu  sync.Mutex
	mem committed
	// notifyAs signs this coordinator's change notifications (cluster.go).
	notifyAs string
}

var registryMigrations = []store.Migration{
	{Version: 1, SQL: `
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE authkeys (
	id          TEXT PRIMARY KEY,
	secret_hash TEXT NOT NULL,
	kind        TEXT NOT NULL,
	tags        TEXT NOT NULL,
	reusable    INTEGER NOT NULL,
	uses        INTEGER NOT NULL DEFAULT 0,
	created_at  INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	revoked     INTEGER NOT NULL DEFAULT 0,
	created_by  TEXT NOT NULL
);
CREATE TABLE nodes (
	incarnation TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	kind        TEXT NOT NULL,
	tags        TEXT NOT NULL,
	status      TEXT NOT NULL,
	addrs       TEXT NOT NULL DEFAULT '[]',
	key_id      TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	revoked_at  INTEGER,
	last_seen   INTEGER
);
CREATE UNIQUE INDEX nodes_active_name ON nodes(name) WHERE status = 'active';
CREATE TABLE policies (
	version    INTEGER PRIMARY KEY,
	document   TEXT NOT NULL,
	applied_by TEXT NOT NULL,
	applied_at INTEGER NOT NULL,
	note       TEXT NOT NULL DEFAULT ''
);
`},
	// An auth key may pin the name its node joins as.
	{Version: 2, SQL: `ALTER TABLE authkeys ADD COLUMN name TEXT NOT NULL DEFAULT '';`},
	// The SHA-256 of the public key a node joined with, so that a join
	// whose answer was lost can be answered again (joinTx).
	{Version: 3, SQL: `ALTER TABLE nodes ADD COLUMN key_spki TEXT NOT NULL DEFAULT '';`},
	// When each node's newest certificate expires (renewal_failing), and
	// the alerts claimed (alerts.go).
	{Version: 4, SQL: `ALTER TABLE nodes ADD COLUMN cert_expires BIGINT NOT NULL DEFAULT 0;` + alertsTable},
	// Calls held for a person's approval (approvals.go).
	{Version: 5, SQL: approvalsTable},
	// The tool definitions gateways report, for review (tools.go).
	{Version: 6, SQL: toolsTable},
	// Shadow policy versions (shadow.go).
	{Version: 7, SQL: shadowTable},
	// People signed in through the OpenID Connect issuer, and the person
	// who joined each node with --sso (sso.go).
	{Version: 8, SQL: `ALTER TABLE nodes ADD COLUMN owner TEXT NOT NULL DEFAULT '';` + loginsTable},
	// What each used ID token was used for, so that the same request may
	// be made again with it after a lost answer (sso.go, useToken).
	{Version: 9, SQL: `ALTER TABLE sso_tokens ADD COLUMN binding TEXT NOT NULL DEFAULT '';`},
	// Delegations to agents acting for people, and revoked people
	// (delegation.go).
	{Version: 10, SQL: delegationsTable},
}

// registryPostgres is step 1 on PostgreSQL: times in nanoseconds need
// BIGINT there (SQLite's INTEGER is 64 bits).
const registryPostgres = `
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE authkeys (
	id          TEXT PRIMARY KEY,
	secret_hash TEXT NOT NULL,
	kind        TEXT NOT NULL,
	tags        TEXT NOT NULL,
	reusable    INTEGER NOT NULL,
	uses        BIGINT NOT NULL DEFAULT 0,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	revoked     INTEGER NOT NULL DEFAULT 0,
	created_by  TEXT NOT NULL
);
CREATE TABLE nodes (
	incarnation TEXT PRIMARY KEY,
	name        TEXT NOT NULL,
	kind        TEXT NOT NULL,
	tags        TEXT NOT NULL,
	status      TEXT NOT NULL,
	addrs       TEXT NOT NULL DEFAULT '[]',
	key_id      TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	revoked_at  BIGINT,
	last_seen   BIGINT
);
CREATE UNIQUE INDEX nodes_active_name ON nodes(name) WHERE status = 'active';
CREATE TABLE policies (
	version    BIGINT PRIMARY KEY,
	document   TEXT NOT NULL,
	applied_by TEXT NOT NULL,
	applied_at BIGINT NOT NULL,
	note       TEXT NOT NULL DEFAULT ''
);
`

func init() { registryMigrations[0].Postgres = registryPostgres }

func newRegistry(ctx context.Context, db *store.DB) (*registry, error) {
	if err := store.Migrate(ctx, db, "registry", registryMigrations); err != nil {
		return nil, err
	}
	return &registry{db: db}, nil
}

type keyRecord struct {
	controlapi.KeyInfo
	SecretHash string
}

func (r *registry) createKey(ctx context.Context, k keyRecord) error {
	tags, _ := json.Marshal(k.Tags)
	_, err := r.db.ExecContext(ctx, `INSERT INTO authkeys(id, secret_hash, kind, tags, reusable, created_at, expires_at, created_by, name)
		VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9)`, k.ID, k.SecretHash, k.Kind, string(tags), boolInt(k.Reusable),
		k.CreatedAt.UnixNano(), k.ExpiresAt.UnixNano(), k.CreatedBy, k.Name)
	return err
}

func scanKey(s rowScanner) (keyRecord, error) {
	var k keyRecord
	var tags string
	var created, expires int64
	if err := s.Scan(&k.ID, &k.SecretHash, &k.Kind, &tags, &k.Reusable, &k.Uses, &created, &expires, &k.Revoked, &k.CreatedBy, &k.Name); err != nil {
		return k, err
	}
	k.CreatedAt = time.Unix(0, created).UTC()
	k.ExpiresAt = time.Unix(0, expires).UTC()
	if err := json.Unmarshal([]byte(tags), &k.Tags); err != nil {
		return k, fmt.Errorf("key %s: tags: %w", k.ID, err)
	}
	return k, nil
}

const keyColumns = `id, secret_hash, kind, tags, reusable, uses, created_at, expires_at, revoked, created_by, name`

func (r *registry) listKeys(ctx context.Context) ([]controlapi.KeyInfo, error) {
	return queryRows(ctx, r.db, func(s rowScanner) (controlapi.KeyInfo, error) {
		k, err := scanKey(s)
		return k.KeyInfo, err
	}, `SELECT `+keyColumns+` FROM authkeys ORDER BY created_at`)
}

func (r *registry) revokeKey(ctx context.Context, id string) error {
	res, err := r.db.ExecContext(ctx, `UPDATE authkeys SET revoked = 1 WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errNotFound
	}
	return nil
}

var (
	errNotFound = errors.New("not found")
	errConflict = errors.New("conflict")
)

// joinError is a refusal with a stable code that the client is shown.
type joinError struct {
	code reason.Code
	msg  string
}

func (e *joinError) Error() string { return e.msg }

// joinAttempt is what a join asks of the registry: the auth key it
// presents, the SHA-256 of the public key in its CSR (hex), and decide,
// which checks the key and returns the node to record. retry says that
// this is the same node asking again (see joinTx): the key's single use
// is then not held against it.
type joinAttempt struct {
	keyID  string
	spki   string
	decide func(k keyRecord, retry bool) (netmap.Node, error)
}

// join consumes the key and records the node in one transaction, so that a
// single-use key can never admit two nodes, however the requests interleave.
// It returns the incarnation the node is registered under.
func (r *registry) join(ctx context.Context, a joinAttempt, now time.Time) (string, error) {
	var inc string
	err := r.writeNode(ctx, func(tx *sql.Tx) (string, error) {
		var err error
		inc, err = r.joinTx(ctx, tx, a, now)
		return inc, err
	})
	return inc, err
}

// joinTx records a join. A node whose join committed but whose answer was
// lost (its coordinator died; the client then asks another) asks again
// with the same key pair and auth key: the active node of that name,
// registered with this auth key and this public key, is that node, and
// it gets a certificate for its registration again instead of name_taken.
// Only the holder of the node's private key can present its public key in
// a signed CSR, and the auth key's secret is checked as for any join.
func (r *registry) joinTx(ctx context.Context, tx *sql.Tx, a joinAttempt, now time.Time) (string, error) {
	k, err := scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM authkeys WHERE id = $1`, a.keyID))
	if errors.Is(err, sql.ErrNoRows) {
		return "", &joinError{reason.KeyUnknown, "auth key is not known to this coordinator"}
	}
	if err != nil {
		return "", err
	}
	n, err := a.decide(k, false)
	var used *joinError
	if errors.As(err, &used) && used.code == reason.KeyUsed || err == nil {
		// The same node asking again? Only then may a used key pass.
		var inc string
		err2 := tx.QueryRowContext(ctx, `SELECT incarnation FROM nodes WHERE name = $1 AND status = 'active'
			AND key_id = $2 AND key_spki = $3 AND key_spki != ''`, string(n.Name), a.keyID, a.spki).Scan(&inc)
		if err2 == nil {
			if _, err := a.decide(k, true); err != nil {
				return "", err
			}
			return inc, nil
		}
		if !errors.Is(err2, sql.ErrNoRows) {
			return "", err2
		}
	}
	if err != nil {
		return "", err
	}
	var held int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM nodes WHERE name = $1 AND status = 'active'`, string(n.Name)).Scan(&held); err != nil {
		return "", err
	}
	if held > 0 {
		return "", &joinError{reason.NameTaken, fmt.Sprintf("name %q is held by another active node (revoke it first or pick another name)", n.Name)}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE authkeys SET uses = uses + 1 WHERE id = $1`, a.keyID); err != nil {
		return "", err
	}
	tags, _ := json.Marshal(n.Tags)
	if _, err := tx.ExecContext(ctx, `INSERT INTO nodes(incarnation, name, kind, tags, status, key_id, key_spki, created_at, last_seen)
		VALUES($1, $2, $3, $4, 'active', $5, $6, $7, $8)`, n.Incarnation, string(n.Name), string(n.Kind), string(tags), a.keyID, a.spki, now.UnixNano(), now.UnixNano()); err != nil {
		return "", err
	}
	return n.Incarnation, nil
}

// ensureNode returns the active node named n.Name, first recording n when
// there is none: the first admin, which every coordinator makes sure of at
// start. Coordinators starting at once on one database take turns (the
// registry's write lock), so exactly one records it and the others get
// that one.
func (r *registry) ensureNode(ctx context.Context, n netmap.Node, now time.Time) (nodeRow, error) {
	err := r.writeNode(ctx, func(tx *sql.Tx) (string, error) {
		var inc string
		err := tx.QueryRowContext(ctx, `SELECT incarnation FROM nodes WHERE name = $1 AND status = 'active'`, string(n.Name)).Scan(&inc)
		if err == nil || !errors.Is(err, sql.ErrNoRows) {
			return inc, err
		}
		tags, _ := json.Marshal(n.Tags)
		_, err = tx.ExecContext(ctx, `INSERT INTO nodes(incarnation, name, kind, tags, status, key_id, created_at)
		VALUES($1, $2, $3, $4, 'active', '', $5)`, n.Incarnation, string(n.Name), string(n.Kind), string(tags), now.UnixNano())
		return n.Incarnation, err
	})
	if err != nil {
		return nodeRow{}, err
	}
	return r.activeNode(ctx, n.Name)
}

// writeNode runs write, which changes one node's row and returns its
// incarnation, in a transaction, and puts the committed row into the
// memory copy (nodeset.go) before anyone else may write. The row is read
// back inside the transaction with scanNode, so memory holds exactly what
// a load from disk would. An error before the commit leaves both as they
// were (the transaction rolls back); a failed commit leaves the outcome in
// doubt, and the memory copy is reloaded before the next publish.
func (r *registry) writeNode(ctx context.Context, write func(*sql.Tx) (string, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	tx, err := r.db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	inc, err := write(tx)
	if err != nil {
		return err
	}
	row, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE incarnation = $1`, inc))
	if err != nil {
		return fmt.Errorf("read back node: %w", err)
	}
	if err := r.db.Notify(ctx, tx, changeChannel, r.notifyAs+" "+changedNode+inc); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		r.doubt()
		return err
	}
	r.put(row)
	return nil
}

// nodeRow is a node with the fields only the registry listing shows.
type nodeRow struct {
	netmap.Node
	CreatedAt   time.Time
	RevokedAt   time.Time
	CertExpires time.Time // zero: not recorded
}

const nodeColumns = `incarnation, name, kind, tags, status, addrs, created_at, revoked_at, last_seen, cert_expires, owner`

// scanNode reads a node row, parsing its name, kind, tags and status once:
// a row that does not parse is an error, never a node that lookups skip.
// The ID is left to the caller, who knows the trust domain.
func scanNode(s rowScanner) (nodeRow, error) {
	var n nodeRow
	var name, kind, tags, status, addrs, owner string
	var created, certExpires int64
	var revoked, seen sql.NullInt64
	if err := s.Scan(&n.Incarnation, &name, &kind, &tags, &status, &addrs, &created, &revoked, &seen, &certExpires, &owner); err != nil {
		return n, err
	}
	var err error
	// The owner (the person who joined it with --sso, or "") goes into
	// gateways' netmaps: the registry is its only source.
	if n.Owner, err = netmap.ParseOwner(owner); err != nil {
		return n, fmt.Errorf("node %q: %w", name, err)
	}
	if n.Name, err = identity.ParseName(name); err != nil {
		return n, fmt.Errorf("node %q: %w", name, err)
	}
	if n.Kind, err = identity.ParseKind(kind); err != nil {
		return n, fmt.Errorf("node %q: %w", name, err)
	}
	if n.Status, err = netmap.ParseStatus(status); err != nil {
		return n, fmt.Errorf("node %q: %w", name, err)
	}
	var tagList []string
	if err := json.Unmarshal([]byte(tags), &tagList); err != nil {
		return n, err
	}
	if n.Tags, err = identity.ParseTags(tagList); err != nil {
		return n, fmt.Errorf("node %q: %w", name, err)
	}
	n.CreatedAt = time.Unix(0, created).UTC()
	if revoked.Valid {
		n.RevokedAt = time.Unix(0, revoked.Int64).UTC()
	}
	if seen.Valid {
		n.LastSeen = time.Unix(0, seen.Int64).UTC()
	}
	if certExpires > 0 {
		n.CertExpires = time.Unix(0, certExpires).UTC()
	}
	if err := json.Unmarshal([]byte(addrs), &n.Addrs); err != nil {
		return n, err
	}
	return n, nil
}

// nodes lists nodes: every active one, and revoked ones revoked after
// revokedSince (zero: all).
func (r *registry) nodes(ctx context.Context, revokedSince time.Time) ([]nodeRow, error) {
	return queryRows(ctx, r.db, scanNode, `SELECT `+nodeColumns+` FROM nodes
		WHERE status = 'active' OR revoked_at >= $1 ORDER BY name, created_at, incarnation`, revokedSince.UnixNano())
}

// activeNode returns the active node with this name, or errNotFound.
func (r *registry) activeNode(ctx context.Context, name identity.Name) (nodeRow, error) {
	n, err := scanNode(r.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE name = $1 AND status = 'active'`, string(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return n, errNotFound
	}
	return n, err
}

// registration returns the node registered under incarnation, active or
// revoked, or errNotFound.
func (r *registry) registration(ctx context.Context, incarnation string) (nodeRow, error) {
	n, err := scanNode(r.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE incarnation = $1`, incarnation))
	if errors.Is(err, sql.ErrNoRows) {
		return n, errNotFound
	}
	return n, err
}

func (r *registry) setTags(ctx context.Context, name string, tags []string) error {
	b, _ := json.Marshal(tags)
	return r.updateActive(ctx, `UPDATE nodes SET tags = $1 WHERE name = $2 AND status = 'active' RETURNING incarnation`, string(b), name)
}

func (r *registry) setAddrs(ctx context.Context, name string, addrs []string) error {
	b, _ := json.Marshal(addrs)
	return r.updateActive(ctx, `UPDATE nodes SET addrs = $1 WHERE name = $2 AND status = 'active' RETURNING incarnation`, string(b), name)
}

func (r *registry) revokeNode(ctx context.Context, name string, now time.Time) error {
	return r.updateActive(ctx, `UPDATE nodes SET status = 'revoked', revoked_at = $1 WHERE name = $2 AND status = 'active' RETURNING incarnation`, now.UnixNano(), name)
}

// setCertExpiry records when the certificate just issued to a node
// expires, for renewal_failing.
func (r *registry) setCertExpiry(ctx context.Context, incarnation string, notAfter time.Time) error {
	_, err := r.db.ExecContext(ctx, `UPDATE nodes SET cert_expires = $1 WHERE incarnation = $2`, notAfter.UnixNano(), incarnation)
	return err
}

func (r *registry) touch(ctx context.Context, incarnation string, now time.Time) error {
	_, err := r.db.ExecContext(ctx, `UPDATE nodes SET last_seen = $1 WHERE incarnation = $2`, now.UnixNano(), incarnation)
	return err
}

// updateActive runs q, an UPDATE of the active node of a name that
// returns its incarnation, or errNotFound when there is no such node.
func (r *registry) updateActive(ctx context.Context, q string, args ...any) error {
	return r.writeNode(ctx, func(tx *sql.Tx) (string, error) {
		var inc string
		err := tx.QueryRowContext(ctx, q, args...).Scan(&inc)
		if errors.Is(err, sql.ErrNoRows) {
			return "", errNotFound
		}
		return inc, err
	})
}

// bumpNetmapVersion returns the next netmap version, persisted so that
// versions keep increasing across restarts.
func (r *registry) bumpNetmapVersion(ctx context.Context) (int64, error) {
	var v int64
	err := r.db.QueryRowContext(ctx, `INSERT INTO meta(k, v) VALUES('netmap_version', '1')
		ON CONFLICT(k) DO UPDATE SET v = CAST(CAST(meta.v AS BIGINT) + 1 AS TEXT) RETURNING CAST(v AS BIGINT)`).Scan(&v)
	return v, err
}

// addPolicy stores doc as the newest policy version, and the memory copy
// with it (see writeNode for why under r.mu, and what a failed commit
// does).
func (r *registry) addPolicy(ctx context.Context, doc, by, note string, now time.Time) (int64, error) {
	return r.addVersion(ctx, policyTableName, changedPolicy, &r.mem.policy, doc, by, note, now)
}

// The tables of versioned documents: the policy and its shadow.
const (
	policyTableName = "policies"
	shadowTableName = "shadow_policies"
)

// addVersion stores doc as the newest version in table, tells the other
// coordinators (changed), and sets *mem, r's memory copy, to it.
func (r *registry) addVersion(ctx context.Context, table, changed string, mem *controlapi.PolicyVersion, doc, by, note string, now time.Time) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tx, err := r.db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	v, err := insertVersion(ctx, tx, table, doc, by, note, now)
	if err != nil {
		return 0, err
	}
	if err := r.db.Notify(ctx, tx, changeChannel, r.notifyAs+" "+changed); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		r.doubt()
		return 0, err
	}
	*mem = controlapi.PolicyVersion{Version: v, Document: doc, AppliedBy: by, AppliedAt: time.Unix(0, now.UnixNano()).UTC(), Note: note}
	r.mem.seq++
	return v, nil
}

// insertVersion adds a row to table (policyTableName or shadowTableName)
// in tx and returns its version, one past the newest.
func insertVersion(ctx context.Context, tx *sql.Tx, table, doc, by, note string, now time.Time) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `INSERT INTO `+table+`(version, document, applied_by, applied_at, note)
		VALUES((SELECT coalesce(max(version), 0) + 1 FROM `+table+`), $1, $2, $3, $4) RETURNING version`,
		doc, by, now.UnixNano(), note).Scan(&v)
	return v, err
}

// policy returns the given version, or the newest when version is 0.
// With no policy applied yet it returns a zero PolicyVersion and no error.
func (r *registry) policy(ctx context.Context, version int64) (controlapi.PolicyVersion, error) {
	q := `SELECT version, document, applied_by, applied_at, note FROM policies ORDER BY version DESC LIMIT 1`
	args := []any{}
	if version > 0 {
		q = `SELECT version, document, applied_by, applied_at, note FROM policies WHERE version = $1`
		args = append(args, version)
	}
	var p controlapi.PolicyVersion
	var at int64
	err := r.db.QueryRowContext(ctx, q, args...).Scan(&p.Version, &p.Document, &p.AppliedBy, &at, &p.Note)
	if errors.Is(err, sql.ErrNoRows) {
		if version > 0 {
			return p, errNotFound
		}
		return p, nil
	}
	p.AppliedAt = time.Unix(0, at).UTC()
	return p, err
}

func (r *registry) policyHistory(ctx context.Context) ([]controlapi.PolicyVersion, error) {
	return queryRows(ctx, r.db, func(s rowScanner) (controlapi.PolicyVersion, error) {
		var p controlapi.PolicyVersion
		var at int64
		err := s.Scan(&p.Version, &p.AppliedBy, &at, &p.Note)
		p.AppliedAt = time.Unix(0, at).UTC()
		return p, err
	}, `SELECT version, applied_by, applied_at, note FROM policies ORDER BY version`)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
