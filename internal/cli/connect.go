package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/engine"
)

func init() {
	register(&command{
		name:  "connect",
		usage: "SERVICE|--all [--no-prefix] [--separator S] --state DIR [--on-behalf-of EMAIL] [--listen 127.0.0.1:PORT|unix:PATH [--no-token]] [--tailnet [--ts-*]] [--ready-fd N] " + metricsUsage,
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

With --all (and no SERVICE) it is one MCP server for every tool service this agent may reach
(README, "One endpoint per agent"): the tools and prompts of each, as its gateway lists them for
this agent, named SERVICE__NAME, and its resources and resource templates under
agentmesh://SERVICE/ followed by the service's own URI; each call, get, read and subscription is
sent to its service's gateway, which decides and audits it as always. --separator S replaces "__"
(1 to 8 characters, each '_', '.' or '-'; "." never appears in a service's name). The set follows
the netmap and each gateway's list_changed; a service that is down only loses its own tools,
prompts and resources. The initialize result's _meta.agentmesh carries this agent's SPIFFE ID,
the policy version, the services aggregated and the separator. --no-prefix keeps the tools' and
prompts' own names and the resources' own URIs (for a client or test suite written for one
server): it then serves at most one service, and none while this agent may reach more (no tool
may shadow another's). Not supported yet through --all:
server-to-client requests (sampling, elicitation), progress and cancellation beyond a call's own,
protocol 2026-07-28 specifics, model services and --tailnet.

With --ready-fd N, the local endpoint is announced as one JSON line on file descriptor N once it
serves (component, node, api, network, addr, url, token_file); with --metrics, the metrics
endpoint is announced first (api "metrics").

With --on-behalf-of EMAIL the agent acts for that person (README, "Delegation: agents acting for
people"): every call carries the newest live delegation the person gave this agent, from its
netmap, and a newer one as soon as it arrives; connect fails at once, saying how to get one, when
there is none.

With --metrics ADDR, Prometheus metrics are served at http://ADDR/metrics (README, "Metrics"):
on loopback only, unless --metrics-allow-remote allows another address.

Examples:
  agentmesh connect payments-db --state ./fraud
  agentmesh connect tool:files --state ./fraud --listen 127.0.0.1:7801
  agentmesh connect --all --state ./fraud
  agentmesh connect --all --separator . --state ./fraud
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
	all := fs.Bool("all", false, "serve one MCP server aggregating every tool service this agent may reach (tools, prompts, resources), instead of SERVICE")
	noPrefix := fs.Bool("no-prefix", false, "with --all: list tools under their own names, not SERVICE__TOOL; serves at most one service (none while this agent may reach more)")
	separator := fs.String("separator", "", "with --all, join a service's name and its tools' and prompts' names with `S` instead of __ (1 to 8 characters, each '_', '.' or '-')")
	verbose := fs.Bool("v", false, "log to stderr at debug level")
	onBehalfOf := fs.String("on-behalf-of", "", "act for the person `EMAIL`: send the newest live delegation they gave this agent ('agentmesh delegate') with every call")
	tf := addTailnetFlags(fs, false)
	readyFD := readyFlag(fs)
	mc := metricsFlags(fs)
	var closeReady func()
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	service := ""
	switch {
	case *noPrefix && !*all:
		return usagef("--no-prefix is an option of --all")
	case *all && len(pos) != 0:
		return usagef("give either SERVICE or --all, not both")
	case !*all && len(pos) != 1:
		return usagef("give one SERVICE (a node name or tool:NAME), or --all")
	case !*all:
		service = pos[0]
	}
	sepSet := false
	fs.Visit(func(f *flag.Flag) { sepSet = sepSet || f.Name == "separator" })
	switch {
	case sepSet && !*all:
		return usagef("--separator goes with --all")
	case sepSet && *noPrefix:
		return usagef("--separator and --no-prefix exclude each other")
	case sepSet && *separator == "":
		return usagef("--separator is empty (1 to 8 characters, each '_', '.' or '-')")
	}
	cfg := engine.ConnectConfig{State: *state, Service: service, All: *all, NoPrefix: *noPrefix, Separator: *separator, Listen: *listen, NoToken: *noToken,
		OnBehalfOf: *onBehalfOf, Stdin: env.Stdin, Stdout: env.Stdout, Logger: newLogger(env, *verbose, slog.LevelWarn), Metrics: *mc}
	if cfg.Tailnet, err = tf.config(fs, env); err != nil {
		return err
	}
	if cfg.Tailnet == nil {
		if err := needState(*state); err != nil {
			return err
		}
	}
	if cfg.Ready, closeReady, err = servingSignal(env, *readyFD); err != nil {
		return err
	}
	defer closeReady()
	return engine.Connect(ctx, cfg)
}
