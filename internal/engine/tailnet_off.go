//go:build notailnet

package engine

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
)

// TailnetBuilt reports whether this binary has the tailnet mode.
const TailnetBuilt = false

// noTailnet stands for a tailnet node in a build without one; it is never
// made, since joinTailnet fails.
type noTailnet struct{}

func (noTailnet) Close() error                        { return nil }
func (noTailnet) Listen(string) (net.Listener, error) { return nil, ErrNoTailnet }
func (noTailnet) Dial(context.Context, string, string) (net.Conn, error) {
	return nil, ErrNoTailnet
}
func (noTailnet) WatchNetmap(context.Context, time.Duration, func(context.Context)) error {
	return ErrNoTailnet
}

func joinTailnet(context.Context, TailnetConfig, *slog.Logger) (noTailnet, error) {
	return noTailnet{}, ErrNoTailnet
}

func tailnetIdentifier(noTailnet, string, *slog.Logger) (admission.Identifier, error) {
	return nil, ErrNoTailnet
}
