package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/durable"
)

// Backup, restore and migrate of a coordinator's database; see
// internal/coordinator/backup.go for the format and what each keeps.
type (
	BackupConfig  = coordinator.BackupConfig
	RestoreConfig = coordinator.RestoreConfig
	MigrateConfig = coordinator.MigrateConfig
	BackupSummary = coordinator.BackupSummary
	MigrateReport = coordinator.MigrateReport
	TableCount    = coordinator.TableCount
)

// BackupToFile writes a backup of the coordinator's database to path
// (mode 0600: it holds auth key hashes and the registry), which must not
// exist. The file appears only once the backup is complete and on disk.
func BackupToFile(ctx context.Context, cfg BackupConfig, path string) (sum *BackupSummary, err error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%s exists; give --out a new file", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return nil, err
	}
	if sum, err = coordinator.Backup(ctx, cfg, f); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	// Link rather than rename: it fails, instead of replacing, when path
	// was created meanwhile.
	if err := os.Link(f.Name(), path); err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return sum, durable.SyncDir(dir)
}

// RestoreFromFile restores the backup in path into the empty database cfg
// names.
func RestoreFromFile(ctx context.Context, cfg RestoreConfig, path string) (*BackupSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sum, err := coordinator.Restore(ctx, cfg, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return sum, nil
}

// Migrate copies an SQLite data directory into an empty PostgreSQL
// database and verifies the audit trail on both sides.
func Migrate(ctx context.Context, cfg MigrateConfig) (*MigrateReport, error) {
	return coordinator.Migrate(ctx, cfg)
}

// ErrMigrateVerify says that the migrated trail does not verify as the
// original does.
var ErrMigrateVerify = coordinator.ErrMigrateVerify
