package engine

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/nodestate"
)

// NodeConfig configures OpenNode.
type NodeConfig struct {
	// State is the node's state directory (from 'agentmesh join').
	// Required.
	State string
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// Command names, in the state directory's lock file, what holds it
	// (a serving node only); "" is "agentmesh serve".
	Command string
	// metrics records the node's metrics (ServeGateway's --metrics).
	metrics *metrics.Set
}

// Node is a node opened once from its state directory, for a program
// that serves and dials with it as it likes (the public mesh package):
// ServeGateway is OpenNode, then Node.Serve. A tool or model node is
// opened as a gateway's is — the state directory locked, the audit spool
// open and shipping — since it is the one that records decisions; an
// agent's is opened as a connector's, without either, so several run side
// by side.
type Node struct {
	n     *node.Node
	log   *slog.Logger
	state string

	mu   sync.Mutex // serialises views and subscriptions
	subs map[int]func(node.View)
	next int
}

// OpenNode opens the node in cfg.State and starts what keeps it current:
// certificate renewal, the netmap watch and, for a node that serves, the
// audit spool and its shipping. Close stops them.
func OpenNode(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if cfg.State == "" {
		return nil, fmt.Errorf("%w: a state directory is required (from 'agentmesh join')", ErrConfig)
	}
	d, err := nodestate.Open(cfg.State)
	if err != nil {
		return nil, err
	}
	c, err := d.Config()
	if err != nil {
		return nil, err
	}
	id, err := c.ID()
	if err != nil {
		return nil, err
	}
	return openNode(ctx, cfg, id.Kind.Serves())
}

// openNode starts the node; audit opens the spool and locks the state
// directory.
func openNode(ctx context.Context, cfg NodeConfig, audit bool) (*Node, error) {
	e := &Node{log: logger(cfg.Logger), state: cfg.State}
	n, err := node.Start(ctx, cfg.State, node.Options{Logger: e.log, Audit: audit, Command: cfg.Command, OnView: e.publish, Metrics: cfg.metrics})
	if err != nil {
		return nil, err
	}
	e.n = n
	return e, nil
}

// ID is the node's identity.
func (e *Node) ID() identity.ID { return e.n.ID() }

// Close stops the node: renewal, the watch, and the spool (flushed; what
// was not shipped yet stays for next time). It is idempotent.
func (e *Node) Close() error { return e.n.Close() }

// publish hands v to every subscriber, one view at a time.
func (e *Node) publish(v node.View) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range e.subs {
		f(v)
	}
}

// subscribe calls f with the current view (if the node has one) and then
// with every newer one, until the returned function is called; views
// reach f one at a time, in order.
func (e *Node) subscribe(f func(node.View)) (cancel func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.subs == nil {
		e.subs = make(map[int]func(node.View))
	}
	id := e.next
	e.next++
	e.subs[id] = f
	if v := e.n.View(); v.Netmap != nil {
		f(v)
	}
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.subs, id)
	}
}

// Dial returns how this node reaches service ("NAME", "tool:NAME" or
// "model:NAME"), exactly as a connector does: tlsCfg presents the node's
// certificate (read at every handshake, so renewals apply at once) and
// accepts only the SPIFFE ID the current netmap names for the service;
// resolve returns the service's current base URL (https://ADDR), waiting
// briefly for a netmap in which it resolves, and fails with a
// connector.ResolveError (revoked, unknown_service, not_serving)
// otherwise.
func (e *Node) Dial(service string) (tlsCfg *tls.Config, resolve func(context.Context) (string, error), err error) {
	kind, _, err := ParseService(service)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	cc := meshConnector(e.n, kind, service, e.log)
	return cc.TLS, cc.Resolve, nil
}

// Serve runs the gateway of this node (a tool or model node) as
// ServeGateway does, until ctx ends; cfg.State is the node's own and may
// be left empty. It is the one function behind both: the same listeners,
// view handling, refusal audit and registration.
func (e *Node) Serve(ctx context.Context, cfg GatewayConfig) error {
	if cfg.State == "" {
		cfg.State = e.state
	} else if cfg.State != e.state {
		return fmt.Errorf("%w: the gateway's state directory %q is not this node's (%q)", ErrConfig, cfg.State, e.state)
	}
	if err := cfg.check(); err != nil {
		return err
	}
	warn, err := checkUpstream(ctx, &cfg)
	if err != nil {
		return err
	}
	// The node was opened without metrics: only the gateway's are
	// recorded here.
	m, err := openMetrics(cfg.Metrics)
	if err != nil {
		return err
	}
	defer m.close()
	return e.serveGateway(ctx, &cfg, warn, m)
}
