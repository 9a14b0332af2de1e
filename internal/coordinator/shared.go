package coordinator

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/store"
)

// On a shared database (PostgreSQL, several coordinators) the CA and the
// audit signing key live in the database, sealed with the database key
// the operator gives every coordinator (package sealed): each coordinator
// must sign with the same keys, and none keeps them on its own disk. The
// database alone opens neither. On SQLite they stay files in the data
// directory (datadir.go).
var secretsMigrations = []store.Migration{
	{Version: 1, SQL: `CREATE TABLE secrets (
	name       TEXT PRIMARY KEY,
	sealed     BLOB NOT NULL,
	created_at INTEGER NOT NULL
)`, Postgres: `CREATE TABLE secrets (
	name       TEXT PRIMARY KEY,
	sealed     BYTEA NOT NULL,
	created_at BIGINT NOT NULL
)`},
}

// The names of the shared secrets.
const (
	secretCA    = "ca"
	secretAudit = "audit-key"
)

// sharedSecret returns the secret name from the database, opened with key.
// When there is none it stores the one create makes, unless create is nil
// (then errNotFound); coordinators starting at once take turns
// (store.LockSecrets), so exactly one creates it and the others read it.
func sharedSecret(ctx context.Context, db *store.DB, key *sealed.Key, name string, now time.Time, create func() ([]byte, error)) ([]byte, error) {
	tx, err := db.BeginWrite(ctx, store.LockSecrets)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var box []byte
	err = tx.QueryRowContext(ctx, `SELECT sealed FROM secrets WHERE name = $1`, name).Scan(&box)
	switch {
	case err == nil:
		return key.Open(name, box)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, err
	case create == nil:
		return nil, errNotFound
	}
	value, err := create()
	if err != nil {
		return nil, err
	}
	if box, err = key.Seal(name, value); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO secrets(name, sealed, created_at) VALUES($1, $2, $3)`, name, box, now.UnixNano()); err != nil {
		return nil, err
	}
	return value, tx.Commit()
}

// sharedCA returns the mesh CA of the shared database, creating it for td
// on the first start of the first coordinator.
func sharedCA(ctx context.Context, db *store.DB, key *sealed.Key, td identity.TrustDomain, now time.Time) (*pki.CA, error) {
	b, err := sharedSecret(ctx, db, key, secretCA, now, func() ([]byte, error) {
		ca, err := pki.NewCA(td, now)
		if err != nil {
			return nil, err
		}
		certPEM, keyPEM, err := ca.PEM()
		return append(certPEM, keyPEM...), err
	})
	if err != nil {
		return nil, fmt.Errorf("the shared CA: %w", err)
	}
	// The certificate's PEM block comes first, then the key's.
	blk, keyPEM := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("the shared CA: not PEM")
	}
	ca, err := pki.ParseCA(pem.EncodeToMemory(blk), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the shared CA: %w", err)
	}
	if ca.TrustDomain() != td {
		return nil, fmt.Errorf("the shared CA is of trust domain %s, the mesh's is %s", ca.TrustDomain(), td)
	}
	return ca, nil
}

// sharedAuditKey returns the audit signing key of the shared database. It
// creates one only while the trail holds no checkpoint (see
// loadOrCreateAuditKey for why).
func sharedAuditKey(ctx context.Context, db *store.DB, key *sealed.Key, now time.Time, create bool) (ed25519.PrivateKey, error) {
	var mk func() ([]byte, error)
	if create {
		mk = newAuditKeyPEM
	}
	b, err := sharedSecret(ctx, db, key, secretAudit, now, mk)
	if errors.Is(err, errNotFound) {
		return nil, errors.New("the shared database's audit trail holds checkpoints but no audit signing key; restore the database's secrets table (a new key would make the trail unverifiable)")
	}
	if err != nil {
		return nil, fmt.Errorf("the shared audit key: %w", err)
	}
	return parseAuditKey(b, "the shared audit key")
}
