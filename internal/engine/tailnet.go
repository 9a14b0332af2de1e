//go:build !notailnet

package engine

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/tailnet"
)

// TailnetBuilt reports whether this binary has the tailnet mode.
const TailnetBuilt = true

// joinTailnet brings this process up on the tailnet as c says (defaults
// resolved).
func joinTailnet(ctx context.Context, c TailnetConfig, log *slog.Logger) (*tailnet.Node, error) {
	n, err := tailnet.Join(ctx, tailnet.Config{Hostname: c.Hostname, StateDir: c.StateDir,
		ControlURL: c.ControlURL, AuthKey: c.AuthKey, Tags: c.Tags, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("tailnet: %w (is the auth key valid, and the control server reachable?)", err)
	}
	return n, nil
}

// tailnetIdentifier identifies a tailnet gateway's callers with WhoIs, with
// tool rules from rules.
func tailnetIdentifier(n *tailnet.Node, rules string, log *slog.Logger) (admission.Identifier, error) {
	src, err := tailnet.ParseSource(rules)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return tailnet.NewIdentifier(n, tailnet.IdentifierConfig{Source: src, Logger: log}), nil
}
