package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/agentmesh/agentmesh/internal/alert"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/sso"
)

// CoordinatorConfig configures StartCoordinator; see coordinator.Config.
type CoordinatorConfig = coordinator.Config

// CoordinatorLimits bound what clients can hold of a coordinator; see
// coordinator.Limits.
type CoordinatorLimits = coordinator.Limits

// Coordinator is a running control plane; Close stops it.
type Coordinator = coordinator.Coordinator

// Defaults of the coordinator's listen address (loopback, so nothing is
// exposed by surprise) and of a new mesh's trust domain.
const (
	DefaultCoordinatorListen = coordinator.DefaultListen
	DefaultTrustDomain       = coordinator.DefaultTrustDomain
)

// StartCoordinator starts the control plane: the CA, registry, auth keys,
// policy store, audit store and the admin API over TLS 1.3. The first
// start initialises cfg.DataDir. It returns once the API serves; Close
// stops it. A malformed listen address or trust domain wraps ErrConfig;
// so does an alerts file that does not parse (each problem with its
// line); a data directory that another coordinator holds matches
// dirlock.ErrInUse, with the holder named.
func StartCoordinator(ctx context.Context, cfg CoordinatorConfig) (*Coordinator, error) {
	return StartCoordinatorWithMetrics(ctx, cfg, MetricsConfig{})
}

// StartCoordinatorWithMetrics is StartCoordinator that also serves
// Prometheus metrics as mc says (MetricsServing announces them); a bad
// metrics address wraps ErrConfig and starts nothing.
func StartCoordinatorWithMetrics(ctx context.Context, cfg CoordinatorConfig, mc MetricsConfig) (*Coordinator, error) {
	m, err := openMetrics(mc)
	if err != nil {
		return nil, err
	}
	if m.set != nil {
		cfg.Metrics, cfg.MetricsListener = m.set, m.ln
	}
	co, err := coordinator.Start(ctx, cfg)
	if err != nil {
		m.close()
	}
	var ae *alert.ConfigError
	if errors.Is(err, httpserver.ErrAddress) || errors.Is(err, identity.ErrBadTrustDomain) || errors.As(err, &ae) {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return co, err
}

// CoordinatorServing is the ready signal of a started coordinator.
func CoordinatorServing(co *Coordinator) Serving {
	return Serving{Component: "coordinator", API: "control", Network: "mtls", Addr: co.Addr().String(), URL: co.URL(), AdminState: co.AdminDir()}
}

// MetricsServing is the ready signal of a coordinator's metrics endpoint;
// ok is false when it serves none.
func MetricsServing(co *Coordinator) (s Serving, ok bool) {
	addr := co.MetricsAddr()
	if addr == "" {
		return Serving{}, false
	}
	return Serving{Component: "coordinator", API: "metrics", Network: "http", Addr: addr, URL: "http://" + addr + metrics.Path}, true
}

// NewDatabaseKey returns a new key that seals the CA and audit keys in a
// shared database, as the text of a key file (base64 and a newline).
func NewDatabaseKey() ([]byte, error) { return sealed.Generate() }

// SSOConfig names a coordinator's OpenID Connect issuer; see sso.Config.
type SSOConfig = sso.Config
