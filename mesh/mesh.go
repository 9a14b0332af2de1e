package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// ErrConfig is wrapped by errors a caller fixes by changing what it
// passed (a missing state directory, an agent node asked to serve, a URL
// that names no service).
var ErrConfig = errors.New("mesh: invalid configuration")

// Options configure Open; nil is the zero value, which is usable.
type Options struct {
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// Node is a mesh node opened from its state directory: its identity, a
// certificate kept renewed, and the netmap and policy kept current.
// Close it when done. A Node is safe for concurrent use.
type Node struct {
	e   *engine.Node
	log *slog.Logger

	once sync.Once
	rt   *meshTransport
}

// Open opens the node whose state directory is state (from Join or
// 'agentmesh join') and starts what keeps it current: certificate
// renewal, the netmap watch and, for a tool node, the audit spool and its
// shipping to the coordinator. A tool node's state directory is locked
// while it is open (one process records its decisions); an agent's is
// not, so several processes of one agent may open it. It fails if the
// certificate has expired (join again).
func Open(ctx context.Context, state string, o *Options) (*Node, error) {
	if o == nil {
		o = &Options{}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e, err := engine.OpenNode(ctx, engine.NodeConfig{State: state, Logger: log, Command: "mesh library: " + filepath.Base(os.Args[0])})
	if err != nil {
		return nil, wrapConfig(err)
	}
	n := &Node{e: e, log: log}
	n.rt = newMeshTransport(n)
	return n, nil
}

// JoinOptions configure Join.
type JoinOptions struct {
	// AuthKey is a key from 'agentmesh keys create'. It pins the
	// coordinator's CA: nothing is sent before the coordinator proves it
	// holds it. Required.
	AuthKey string
	// Name is the node's name (lower-case letters, digits, '-', '_').
	// Required.
	Name string
	// Kind is "agent", "tool" or "model"; "" is the key's kind.
	Kind string
	// State is the directory for the node's key, certificate and cached
	// netmap, created with mode 0700. Required.
	State string
	// Options are Open's.
	Options
}

// Join joins the mesh as a new node — the private key is created in
// o.State and never leaves it — and opens it.
func Join(ctx context.Context, o JoinOptions) (*Node, error) {
	if o.AuthKey == "" || o.Name == "" || o.State == "" {
		return nil, fmt.Errorf("%w: an auth key, a name and a state directory are required", ErrConfig)
	}
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: o.AuthKey, Name: o.Name, Kind: o.Kind, State: o.State}); err != nil {
		return nil, fmt.Errorf("mesh: join: %w", err)
	}
	return Open(ctx, o.State, &o.Options)
}

// ID is the node's SPIFFE ID, such as spiffe://example.mesh/agent/fraud.
func (n *Node) ID() string { return n.e.ID().String() }

// Close stops the node: renewal, the netmap watch, the audit spool
// (flushed to disk; what was not shipped yet is shipped by the next
// Open) and the client's idle connections. Requests still in flight
// fail. Close is idempotent.
func (n *Node) Close() error {
	var err error
	n.once.Do(func() {
		n.rt.close()
		err = n.e.Close()
	})
	return err
}

// Transport is the node's http.RoundTripper to mesh services: see
// HTTPClient. It serves requests to https://NAME/... only.
func (n *Node) Transport() http.RoundTripper { return n.rt }

// HTTPClient returns an http.Client on Transport that never follows a
// redirect (a mesh service never redirects, and following one could
// carry the node's session elsewhere). Requests go to https://NAME/PATH,
// NAME a service of the mesh ([ServiceURL]): each is sent to the address
// the current netmap gives for NAME, over mTLS with this node's
// certificate, to a server that must present the SPIFFE ID the netmap
// names for NAME. Use it as the MCP Go SDK's
// StreamableClientTransport.HTTPClient.
func (n *Node) HTTPClient() *http.Client { return transport.Client(n.rt) }

// ServiceURL is the MCP endpoint of the mesh service name, as
// HTTPClient's requests address it: https://NAME/mcp.
func ServiceURL(name string) string { return "https://" + name + "/mcp" }

// wrapConfig makes the engine's configuration errors this package's.
func wrapConfig(err error) error {
	if errors.Is(err, engine.ErrConfig) {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return err
}
