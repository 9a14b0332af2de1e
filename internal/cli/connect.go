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
	"agentmesh/internal/connector/modelconn"
	"agentmesh/internal/identity"
	"agentmesh/internal/loopback"
	"agentmesh/internal/netmap"
	"agentmesh/internal/node"
	"agentmesh/internal/transport"
)

func init() {
	register(&command{
		name:  "connect",
		usage: "SERVICE --state DIR [--listen 127.0.0.1:PORT|unix:PATH [--no-token]] [--tailnet [--ts-*]]",
		short: "expose a mesh tool server to a local MCP client (stdio, or HTTP on loopback), or a model API to a local OpenAI client",
		long: `SERVICE is a node name or tool:NAME, resolved through the netmap. The connection to its
gateway uses this node's identity (mTLS) and is re-established after failures.

By default it is a stdio MCP server, so it can be the command of an MCP client's configuration:

  {"mcpServers": {"payments-db": {"command": "agentmesh",
      "args": ["connect", "payments-db", "--state", "/home/me/.agentmesh/fraud"]}}}

With --listen it serves Streamable HTTP at http://127.0.0.1:PORT/mcp, on loopback only, and
refuses requests whose Host or Origin is not local (DNS rebinding protection). Every local user
can reach a loopback port, so each start makes a new bearer token, written with mode 0600 to
DIR/local-PORT.token, that every request must carry (Authorization: Bearer TOKEN); the file is
removed when connect stops. --no-token drops it, and then anybody on this machine can act as
this agent. --listen unix:PATH serves on a Unix socket instead (mode 0600, in a directory only
you may enter), which needs no token but few MCP clients can use.

For model:NAME, --listen is required: it serves the model's OpenAI-compatible API at
http://127.0.0.1:PORT/v1, so unmodified clients use OPENAI_BASE_URL=http://127.0.0.1:PORT/v1
and the endpoint's token as OPENAI_API_KEY (it stays on this machine; the mesh identity is the
credential towards the gateway).

With --tailnet it joins a tailnet (Tailscale, or Headscale with --ts-control-url) as its own node
with tsnet and dials the gateway there: SERVICE is then the gateway's tailnet name (NAME or
NAME.TAILNET.ts.net, with model: for a model API), WireGuard is the transport and the tailnet
identity the credential, so --state is optional (it supplies defaults for --ts-hostname and
--ts-state, and keeps a TCP --listen endpoint's token). The auth key comes from $TS_AUTHKEY
(or --ts-authkey).

Examples:
  agentmesh connect payments-db --state ./fraud
  agentmesh connect tool:files --state ./fraud --listen 127.0.0.1:7801
  agentmesh connect tool:files --state ./fraud --listen unix:$XDG_RUNTIME_DIR/agentmesh/files.sock
  agentmesh connect model:llm --state ./fraud --listen 127.0.0.1:7802
    OPENAI_BASE_URL=http://127.0.0.1:7802/v1 OPENAI_API_KEY=$(cat ./fraud/local-7802.token) python agent.py
  TS_AUTHKEY=tskey-auth-... agentmesh connect tools --tailnet --ts-hostname fraud-agent --ts-state ./ts`,
		run: runConnect,
	})
}

func runConnect(ctx context.Context, env Env, args []string) error {
	c := commands["connect"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	listen := fs.String("listen", "", "serve Streamable HTTP on this loopback `ADDR` (127.0.0.1:PORT, or unix:PATH for a private Unix socket) instead of stdio")
	noToken := fs.Bool("no-token", false, "serve a TCP --listen endpoint without its bearer token: every local user and process that can reach the port then acts as this agent")
	verbose := fs.Bool("v", false, "log to stderr at debug level")
	tf := addTailnetFlags(fs, false)
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("give one SERVICE (a node name or tool:NAME)")
	}
	if err := tf.check(fs); err != nil {
		return err
	}
	var kind identity.Kind
	if *tf.on {
		kind, _, err = parseTailnetService(pos[0])
	} else {
		kind, _, err = parseService(pos[0])
	}
	if err != nil {
		return usagef("%v", err)
	}
	if kind == identity.KindModel && *listen == "" {
		return usagef("a model endpoint is HTTP: give --listen 127.0.0.1:PORT (stdio makes no sense for a model)")
	}
	if !*tf.on {
		if err := needState(*state); err != nil {
			return err
		}
	}
	var (
		ln   net.Listener
		auth loopback.Auth
	)
	if *listen != "" {
		if ln, err = connector.Listen(*listen); err != nil {
			return err
		}
		var done func()
		if auth, done, err = localAuth(env, *state, ln, kind, pos[0], *noToken); err != nil {
			ln.Close()
			return err
		}
		defer done()
	}
	if *tf.on {
		return connectTailnet(ctx, env, *state, pos[0], ln, auth, tf, newLogger(env, *verbose))
	}
	return connectService(ctx, env, *state, pos[0], ln, auth, newLogger(env, *verbose))
}

// connectService runs a connector to service until ctx ends: on ln when it
// is not nil (which it closes, admitting clients by auth), else over env's
// stdin and stdout.
func connectService(ctx context.Context, env Env, state, service string, ln net.Listener, auth loopback.Auth, log *slog.Logger) error {
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
	target := func() (netmap.Node, error) { return resolveService(n.View().Netmap, kind, name) }
	// The gateway reached must be the node the netmap names for the
	// service, asked again at every handshake.
	tlsCfg := transport.ClientTLS(n.Client.Certificate, n.Client.Verifier(), func() (identity.ID, error) {
		t, err := target()
		if err != nil {
			return identity.ID{}, err
		}
		return t.ID, nil
	})
	resolve := func(ctx context.Context) (string, error) {
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
	}
	return runConnector(ctx, env, kind, ln, auth, connector.Config{TLS: tlsCfg, Logger: log, Resolve: resolve})
}

// runConnector serves the local side of a connection to a gateway until ctx
// ends: the model API on ln for a model service, else MCP on ln or, when ln
// is nil, over env's stdin and stdout; auth admits the clients of ln. cfg
// says how to reach the gateway.
func runConnector(ctx context.Context, env Env, kind identity.Kind, ln net.Listener, auth loopback.Auth, cfg connector.Config) error {
	if kind == identity.KindModel && ln != nil {
		return connectModel(ctx, modelconn.Config{Resolve: cfg.Resolve, TLS: cfg.TLS, Dial: cfg.Dial, Logger: cfg.Logger}, ln, auth)
	}
	cn, err := connector.New(cfg)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	defer cn.Close()
	if ln != nil {
		err = cn.ServeListener(ctx, ln, auth)
	} else {
		err = cn.ServeStdio(ctx, env.Stdin, env.Stdout)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// connectModel runs the local OpenAI-compatible endpoint of a model service
// on ln, admitting clients by auth, until ctx ends. It closes ln.
func connectModel(ctx context.Context, cfg modelconn.Config, ln net.Listener, auth loopback.Auth) error {
	l, err := modelconn.New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer l.Close()
	err = l.Serve(ctx, ln, auth)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// resolveWait bounds how long a connection attempt waits for the service
// to appear in the netmap.
const resolveWait = 5 * time.Second

// cutServiceKind splits an optional "tool:" or "model:" prefix off s.
func cutServiceKind(s string) (identity.Kind, string, error) {
	k, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", s, nil
	}
	pk, err := identity.ParseKind(k)
	if err != nil || !pk.Serves() {
		return "", "", fmt.Errorf("SERVICE %q: the prefix must be tool: or model:", s)
	}
	return pk, rest, nil
}

// parseService reads "NAME", "tool:NAME" or "model:NAME".
func parseService(s string) (identity.Kind, identity.Name, error) {
	kind, s, err := cutServiceKind(s)
	if err != nil {
		return "", "", err
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
	n, ok := nm.Node(name)
	switch {
	case !ok || n.Status != netmap.StatusActive:
		return netmap.Node{}, fmt.Errorf("no service named %q in this node's netmap: it lists only the services a grant lets this node reach (is there one? is %q joined and serving?)", name, name)
	case kind != "" && n.Kind != kind:
		return netmap.Node{}, fmt.Errorf("%q is a %s node, not %s", name, n.Kind, kind)
	case !n.Kind.Serves():
		return netmap.Node{}, fmt.Errorf("%q is a %s node; only tool and model nodes serve", name, n.Kind)
	case len(n.Addrs) == 0:
		return netmap.Node{}, fmt.Errorf("%q has not registered an address (is 'agentmesh serve' running?)", name)
	}
	return n, nil
}
