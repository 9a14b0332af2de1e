package tailnet

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/tsnet"
)

// AuthKeyEnv is the environment variable an auth key is read from when
// Config.AuthKey is empty (the same one tailscale's tools use).
const AuthKeyEnv = "TS_AUTHKEY"

// DefaultPollInterval is how often WatchNetmap re-checks callers for
// capability grant changes when its interval is zero.
const DefaultPollInterval = time.Second

// Config says how a Node joins the tailnet.
type Config struct {
	// Hostname is the node's name on the tailnet (its MagicDNS label).
	// Required; for a gateway it is the name connectors dial.
	Hostname string
	// StateDir keeps the node's keys and tailnet state between runs.
	// Required unless Store is set.
	StateDir string
	// ControlURL is the coordination server; "" is Tailscale's. Set it to
	// a Headscale server's URL to use Headscale.
	ControlURL string
	// AuthKey authorises the node to join; "" reads AuthKeyEnv, and if that
	// is empty too the node must already be logged in (state in StateDir).
	AuthKey string
	// Ephemeral makes control forget the node soon after it goes offline.
	Ephemeral bool
	// Tags are requested for the node (tag:NAME), as tailscale up
	// --advertise-tags does; control decides whether to grant them.
	Tags []string
	// Store overrides where tailnet state is kept (tests use an in-memory
	// store); nil keeps it in StateDir.
	Store ipn.StateStore
	// Logger receives tsnet's logs at debug level, and what tsnet tells its
	// user (a login URL) at warn level; nil discards them.
	Logger *slog.Logger
}

// Node is this process on the tailnet. Create it with Join; Close it.
type Node struct {
	srv *tsnet.Server
	lc  *local.Client
	log *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Join brings a node up on the tailnet and waits until it is running (or
// ctx ends). A failed start is undone.
func Join(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Hostname == "" {
		return nil, fmt.Errorf("join: %w: hostname is required", ErrConfig)
	}
	if cfg.StateDir == "" && cfg.Store == nil {
		return nil, fmt.Errorf("join: %w: a state directory is required", ErrConfig)
	}
	if cfg.AuthKey == "" {
		cfg.AuthKey = os.Getenv(AuthKeyEnv)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir != "" {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("join: state directory: %w", err)
		}
	}
	logf := func(format string, args ...any) {
		log.Debug(strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"), "component", "tsnet")
	}
	// What tsnet says to its user (such as the login URL of a node without
	// an auth key) must be seen.
	userLogf := func(format string, args ...any) {
		log.Warn(strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"), "component", "tsnet")
	}
	srv := &tsnet.Server{
		Dir:           cfg.StateDir,
		Store:         cfg.Store,
		Hostname:      cfg.Hostname,
		ControlURL:    cfg.ControlURL,
		AuthKey:       cfg.AuthKey,
		Ephemeral:     cfg.Ephemeral,
		AdvertiseTags: cfg.Tags,
		Logf:          logf,
		UserLogf:      userLogf,
	}
	if cfg.StateDir == "" {
		// tsnet wants a directory even with a custom store (for logs).
		dir, err := os.MkdirTemp("", "agentmesh-tsnet-")
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		srv.Dir = dir
	}
	if _, err := srv.Up(ctx); err != nil {
		srv.Close()
		return nil, fmt.Errorf("join %s: %w", cfg.ControlURL, err)
	}
	lc, err := srv.LocalClient()
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("join: local client: %w", err)
	}
	return &Node{srv: srv, lc: lc, log: log}, nil
}

// Listen listens for TCP on the node's tailnet addresses, such as ":80".
// Connections arrive with their tailnet source address, which WhoIs names.
func (n *Node) Listen(addr string) (net.Listener, error) {
	ln, err := n.srv.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// Dial connects to addr ("host:port", host a tailnet name or address) over
// the tailnet.
func (n *Node) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := n.srv.Dial(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

// WhoIs asks the node who is behind remoteAddr ("ip:port" as seen on a
// Listen connection).
func (n *Node) WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error) {
	who, err := n.lc.WhoIs(ctx, remoteAddr)
	if err != nil {
		return nil, fmt.Errorf("whois %s: %w", remoteAddr, err)
	}
	return who, nil
}

// Status returns the node's view of the tailnet (peers, their current
// paths).
func (n *Node) Status(ctx context.Context) (*ipnstate.Status, error) {
	st, err := n.lc.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// Server is the underlying tsnet server, for what this package does not
// wrap.
func (n *Node) Server() *tsnet.Server { return n.srv }

// Close leaves the tailnet and stops everything the node started. It is
// idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if err := n.srv.Close(); err != nil {
			n.closeErr = fmt.Errorf("close: %w", err)
		}
	})
	return n.closeErr
}

// WatchNetmap calls onChange each time the tailnet's view of identities or
// capabilities may have changed, until ctx ends; pass gateway.Recheck.
// Peer and self changes arrive on tsnet's IPN bus. Capability grants arrive
// in packet filter updates, which tsnet neither announces on the bus nor
// exposes (its debug view of the filter is the stale netmap copy), so
// onChange is also called every interval (zero: DefaultPollInterval): a
// re-check is idempotent and only notifies sessions whose view changed.
// onChange runs on WatchNetmap's goroutine, never concurrently with itself.
// WatchNetmap returns when everything it started has stopped, with ctx's
// error or the error that ended the watch.
func (n *Node) WatchNetmap(ctx context.Context, interval time.Duration, onChange func(context.Context)) error {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := n.lc.WatchIPNBus(ctx, ipn.NotifyPeerChanges)
	if err != nil {
		return fmt.Errorf("watch netmap: %w", err)
	}
	kick := make(chan struct{}, 1)
	busErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nt, err := w.Next()
			if err != nil {
				busErr <- err
				return
			}
			if nt.SelfChange != nil || len(nt.PeersChanged) > 0 || len(nt.PeersRemoved) > 0 || nt.NetMap != nil || nt.State != nil {
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		}
	}()
	defer wg.Wait()
	defer w.Close() // unblocks Next before wg.Wait
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-busErr:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("watch netmap: %w", err)
		case <-kick:
			onChange(ctx)
		case <-t.C:
			onChange(ctx)
		}
	}
}
