package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/aggregate"
	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// settleWait bounds how long the aggregated endpoint waits for its
// services' first lists before it serves.
const settleWait = 5 * time.Second

// connectAll runs the aggregated endpoint (ConnectConfig.All): one MCP
// server, over stdio or on a loopback listener with the same token and
// guard as a single-service connector, whose tools, prompts and
// resources are those of every tool service in the agent's netmap, kept current as the netmap and each
// gateway's lists change (package aggregate).
func connectAll(ctx context.Context, cfg ConnectConfig) (err error) {
	ln := cfg.Listener
	defer func() {
		if err != nil && ln != nil {
			ln.Close()
		}
	}()
	switch {
	case cfg.Service != "":
		return fmt.Errorf("%w: the aggregated endpoint serves every tool service: give no service with it", ErrConfig)
	case cfg.Tailnet != nil:
		return fmt.Errorf("%w: the aggregated endpoint is not supported over a tailnet yet", ErrConfig)
	case cfg.State == "":
		return fmt.Errorf("%w: a state directory is required (from 'agentmesh join')", ErrConfig)
	case cfg.Listen == "" && cfg.Listener == nil && (cfg.Stdin == nil || cfg.Stdout == nil):
		return fmt.Errorf("%w: stdio mode needs Stdin and Stdout", ErrConfig)
	}
	person, err := cfg.onBehalfOf(identity.KindTool)
	if err != nil {
		return err
	}
	if cfg.Separator != "" {
		if err := aggregate.CheckSeparator(cfg.Separator); err != nil {
			return fmt.Errorf("%w: --separator: %v", ErrConfig, err)
		}
	}
	log := logger(cfg.Logger)
	m, err := openMetrics(cfg.Metrics)
	if err != nil {
		return err
	}
	defer m.close()
	if ln == nil && cfg.Listen != "" {
		if ln, err = listenLocal(cfg.Listen); err != nil {
			return err
		}
	}
	s := Serving{Component: "connector", API: "mcp", Network: "stdio", Service: "*"}
	var auth loopback.Auth
	if ln != nil {
		var done func()
		if auth, done, err = localAuth(&s, cfg.State, ln, cfg.NoToken, log); err != nil {
			return err
		}
		defer done()
	}
	var agg atomic.Pointer[aggregate.Aggregator]
	n, err := node.Start(ctx, cfg.State, node.Options{Logger: log, Metrics: m.set, OnView: func(v node.View) {
		if a := agg.Load(); a != nil {
			a.Update(aggregateSnapshot(v.Netmap))
		}
	}})
	if err != nil {
		return err
	}
	defer n.Close()
	s.Node = n.ID().String()
	self := n.ID()
	var deleg func() (string, error)
	if person != "" {
		src := newDelegationSource(n, person)
		if err := src.wait(ctx); err != nil {
			return err
		}
		deleg = src.token
	}
	a, err := aggregate.New(aggregate.Config{SPIFFEID: self.String(), Logger: log, Version: "agentmesh", NoPrefix: cfg.NoPrefix, Separator: cfg.Separator,
		Transport: func(svc aggregate.Service) (mcp.Transport, error) { return meshTransport(n, svc, deleg) }})
	if err != nil {
		return err
	}
	defer a.Close()
	agg.Store(a)
	a.Update(aggregateSnapshot(n.View().Netmap))
	// Serve once the coordinator's current netmap is in, every tool
	// service in it has an address (a gateway that has just started
	// registers it in the background), and every service has answered
	// its first list or been found down; or after settleWait, whichever
	// comes first: what is slower joins the set later, with list_changed.
	sctx, cancel := context.WithTimeout(ctx, settleWait)
	if nm, err := n.Client.Netmap(sctx, -1); err == nil && nm != nil {
		a.Update(aggregateSnapshot(nm))
		if !allServing(nm) {
			_, _ = n.WaitView(sctx, func(v node.View) bool { return allServing(v.Netmap) })
		}
	}
	_ = a.WaitSettled(sctx)
	cancel()
	if m.ln != nil {
		ready(cfg.Ready, m.serving("connector", s.Node))
	}
	ready(cfg.Ready, s)
	mctx, stopMetrics := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- m.task()(mctx) }()
	if ln != nil {
		ln2 := ln
		ln = nil // ServeListener owns it now
		err = a.ServeListener(ctx, ln2, auth)
	} else {
		err = a.ServeStdio(ctx, cfg.Stdin, cfg.Stdout)
	}
	stopMetrics()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if merr := <-served; err == nil && merr != nil && !errors.Is(merr, context.Canceled) {
		err = fmt.Errorf("metrics: %w", merr)
	}
	return err
}

// aggregateSnapshot is what the aggregated endpoint serves under nm:
// every active tool service with a gateway address, except the node
// itself. The coordinator lists in a node's netmap only the nodes it may
// reach; each gateway filters its own list for the agent.
func aggregateSnapshot(nm *netmap.Netmap) aggregate.Snapshot {
	var s aggregate.Snapshot
	if nm == nil {
		return s
	}
	s.PolicyVersion = nm.Policy.Version
	for _, nd := range nm.Nodes {
		if nd.Kind != identity.KindTool || nd.Status != netmap.StatusActive || len(nd.Addrs) == 0 {
			continue
		}
		s.Services = append(s.Services, aggregate.Service{Name: string(nd.Name), ID: nd.ID.String(), Addr: nd.Addrs[0]})
	}
	return s
}

// allServing reports whether every active tool service in nm has a
// gateway address.
func allServing(nm *netmap.Netmap) bool {
	if nm == nil {
		return false
	}
	for _, nd := range nm.Nodes {
		if nd.Kind == identity.KindTool && nd.Status == netmap.StatusActive && len(nd.Addrs) == 0 {
			return false
		}
	}
	return true
}

// meshTransport is an SDK client transport to svc's gateway over this
// node's mTLS, accepting only the SPIFFE ID the netmap named for it.
// deleg, when set, supplies the delegation every request carries.
func meshTransport(n *node.Node, svc aggregate.Service, deleg func() (string, error)) (mcp.Transport, error) {
	id, err := identity.Parse(svc.ID)
	if err != nil {
		return nil, err
	}
	tlsCfg := transport.ClientTLS(n.Client.Certificate, n.Client.Verifier(), func() (identity.ID, error) { return id, nil })
	tr, err := transport.New(transport.Config{TLS: tlsCfg})
	if err != nil {
		return nil, err
	}
	hc := transport.Client(tr)
	if deleg != nil {
		hc.Transport = connector.WithDelegation(tr, deleg)
	}
	return &mcp.StreamableClientTransport{Endpoint: "https://" + svc.Addr + "/mcp", HTTPClient: hc, MaxRetries: 2}, nil
}
