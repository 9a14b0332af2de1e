package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"agentmesh/internal/identity"
	"agentmesh/internal/modelgw"
	"agentmesh/internal/node"
)

// serveModel runs the model gateway of a model node until ctx ends: the
// same mTLS listener and address registration as an MCP gateway, with
// modelgw in front of an OpenAI-compatible upstream. publish hands the
// gateway to serve's netmap watcher, which keeps its state current.
func serveModel(ctx context.Context, env Env, n *node.Node, sc serveConfig, tlsCfg *tls.Config, self identity.ID,
	publish func(*modelgw.Gateway)) error {
	log := sc.log
	if sc.modelUpstream == "" {
		return usagef("a model node serves an OpenAI-compatible HTTP API: give --upstream http://HOST:PORT (a stdio command makes no sense for a model)")
	}
	g, err := modelgw.New(modelgw.Config{TLS: tlsCfg, Upstream: sc.modelUpstream, Audit: n, StateDir: sc.state,
		MaxBodyBytes: int64(sc.limits.MaxBytes), Logger: log}, nil)
	if err != nil {
		return err
	}
	publish(g)
	ln, err := net.Listen("tcp", sc.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := ln.Addr().String()
	adv := sc.advertise
	if adv == "" {
		adv = addr
	}
	regCtx, stopReg := context.WithCancel(ctx)
	var regWG sync.WaitGroup
	regWG.Add(1)
	go func() {
		defer regWG.Done()
		registerAddr(regCtx, n, adv, log)
	}()
	defer func() { stopReg(); regWG.Wait() }()
	fmt.Fprintf(env.Stdout, "gateway %s serving the model API at https://%s/v1 (upstream %s)\n", self, addr, sc.modelUpstream)
	if sc.ready != nil {
		sc.ready(addr)
	}
	err = g.Serve(ctx, ln)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// connectModel runs the local OpenAI-compatible endpoint of a model service
// on ln until ctx ends.
func connectModel(ctx context.Context, n *node.Node, kind identity.Kind, name identity.Name, tlsCfg *tls.Config,
	ln net.Listener, log *slog.Logger) error {
	l, err := modelgw.NewLocal(modelgw.LocalConfig{
		TLS:    tlsCfg,
		Logger: log,
		Resolve: func(ctx context.Context) (string, error) {
			t, err := resolveService(n.View().Netmap, kind, name)
			if err != nil {
				wctx, cancel := context.WithTimeout(ctx, resolveWait)
				v, werr := n.WaitView(wctx, func(v node.View) bool {
					_, err := resolveService(v.Netmap, kind, name)
					return err == nil
				})
				cancel()
				if werr != nil {
					return "", err
				}
				if t, err = resolveService(v.Netmap, kind, name); err != nil {
					return "", err
				}
			}
			return "https://" + t.Addrs[0], nil
		},
	})
	if err != nil {
		ln.Close()
		return err
	}
	defer l.Close()
	err = l.Serve(ctx, ln)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
