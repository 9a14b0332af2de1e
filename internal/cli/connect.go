package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"agentmesh/internal/connector"
	"agentmesh/internal/identity"
	"agentmesh/internal/netmap"
	"agentmesh/internal/node"
	"agentmesh/internal/pki"
)

func init() {
	register(&command{
		name:  "connect",
		usage: "SERVICE --state DIR [--listen 127.0.0.1:PORT]",
		short: "expose a mesh tool server to a local MCP client (stdio, or HTTP on loopback), or a model API to a local OpenAI client",
		long: `SERVICE is a node name or tool:NAME, resolved through the netmap. The connection to its
gateway uses this node's identity (mTLS) and is re-established after failures.

By default it is a stdio MCP server, so it can be the command of an MCP client's configuration:

  {"mcpServers": {"payments-db": {"command": "agentmesh",
      "args": ["connect", "payments-db", "--state", "/home/me/.agentmesh/fraud"]}}}

With --listen it serves Streamable HTTP at http://127.0.0.1:PORT/mcp, on loopback only, and
refuses requests whose Host or Origin is not local (DNS rebinding protection).

For model:NAME, --listen is required: it serves the model's OpenAI-compatible API at
http://127.0.0.1:PORT/v1, so unmodified clients use OPENAI_BASE_URL=http://127.0.0.1:PORT/v1
(the API key they send stays on this machine; the mesh identity is the credential).

Examples:
  agentmesh connect payments-db --state ./fraud
  agentmesh connect tool:files --state ./fraud --listen 127.0.0.1:7801
  agentmesh connect model:llm --state ./fraud --listen 127.0.0.1:7802`,
		run: runConnect,
	})
}

func runConnect(ctx context.Context, env Env, args []string) error {
	c := commands["connect"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	listen := fs.String("listen", "", "serve Streamable HTTP on this loopback `ADDR` instead of stdio")
	verbose := fs.Bool("v", false, "log to stderr at debug level")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give one SERVICE (a node name or tool:NAME)")
	}
	kind, _, err := parseService(pos[0])
	if err != nil {
		return usagef("%v", err)
	}
	if kind == identity.KindModel && *listen == "" {
		return usagef("a model endpoint is HTTP: give --listen 127.0.0.1:PORT (stdio makes no sense for a model)")
	}
	if err := needState(*state); err != nil {
		return err
	}
	var ln net.Listener
	if *listen != "" {
		if ln, err = connector.Listen(*listen); err != nil {
			return err
		}
		if kind == identity.KindModel {
			fmt.Fprintf(env.Stderr, "connect: serving %s at http://%s/v1 (OPENAI_BASE_URL)\n", pos[0], ln.Addr())
		} else {
			fmt.Fprintf(env.Stderr, "connect: serving %s at http://%s/mcp\n", pos[0], ln.Addr())
		}
	}
	return connectService(ctx, env, *state, pos[0], ln, newLogger(env, *verbose))
}

// connectService runs a connector to service until ctx ends: on ln when it
// is not nil (which it closes), else over env's stdin and stdout.
func connectService(ctx context.Context, env Env, state, service string, ln net.Listener, log *slog.Logger) error {
	kind, name, err := parseService(service)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	n, err := node.Start(ctx, state, node.Options{Logger: log})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	defer n.Close()
	td := n.ID().TrustDomain
	target := func() (netmap.Node, error) { return resolveService(n.View().Netmap, kind, name) }
	tlsCfg := pki.ClientTLS(n.Client.Certificate, n.Client.Verifier(), func(got identity.ID) error {
		t, err := target()
		if err != nil {
			return err
		}
		if got.String() != t.ID || got.TrustDomain != td {
			return fmt.Errorf("%w: reached %s, want %s", pki.ErrWrongPeer, got, t.ID)
		}
		return nil
	})
	if kind == identity.KindModel && ln != nil {
		return connectModel(ctx, n, kind, name, tlsCfg, ln, log)
	}
	cn, err := connector.New(connector.Config{
		TLS:    tlsCfg,
		Logger: log,
		Resolve: func(ctx context.Context) (string, error) {
			t, err := target()
			if err != nil {
				// Right after start the netmap may not have arrived yet, or
				// the gateway may still be registering: wait briefly for a
				// view in which the service resolves.
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
		if ln != nil {
			ln.Close()
		}
		return err
	}
	defer cn.Close()
	if ln != nil {
		err = cn.ServeListener(ctx, ln)
	} else {
		err = cn.ServeStdio(ctx, env.Stdin, env.Stdout)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// resolveWait bounds how long a connection attempt waits for the service
// to appear in the netmap.
const resolveWait = 5 * time.Second

// parseService reads "NAME", "tool:NAME" or "model:NAME".
func parseService(s string) (identity.Kind, identity.Name, error) {
	kind := identity.Kind("")
	if k, rest, ok := strings.Cut(s, ":"); ok {
		pk, err := identity.ParseKind(k)
		if err != nil || !pk.Serves() {
			return "", "", fmt.Errorf("SERVICE %q: the prefix must be tool: or model:", s)
		}
		kind, s = pk, rest
	}
	name, err := identity.ParseName(s)
	if err != nil {
		return "", "", err
	}
	return kind, name, nil
}

// resolveService finds an active serving node with an address.
func resolveService(nm *netmap.Netmap, kind identity.Kind, name identity.Name) (netmap.Node, error) {
	if nm == nil {
		return netmap.Node{}, errors.New("no netmap yet (is the coordinator reachable, and did this node ever reach it?)")
	}
	n, ok := nm.Node(string(name))
	switch {
	case !ok || n.Status != netmap.StatusActive:
		return netmap.Node{}, fmt.Errorf("no active node named %q in the netmap", name)
	case kind != "" && n.Kind != string(kind):
		return netmap.Node{}, fmt.Errorf("%q is a %s node, not %s", name, n.Kind, kind)
	case !identity.Kind(n.Kind).Serves():
		return netmap.Node{}, fmt.Errorf("%q is a %s node; only tool and model nodes serve", name, n.Kind)
	case len(n.Addrs) == 0:
		return netmap.Node{}, fmt.Errorf("%q has not registered an address (is 'agentmesh serve' running?)", name)
	}
	return n, nil
}
