package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/engine"
)

func init() {
	register(&command{
		name:  "serve",
		usage: "--state DIR [--listen ADDR] [--advertise ADDR] [--tailnet [--ts-*] [--tailnet-policy agentmesh|tailnet]] [--ready-fd N] " + metricsUsage + " [--require-upstream] (--upstream URL | -- COMMAND [ARGS...])",
		short: "run the gateway of a tool or model node: mTLS in, policy per message, audit, forward upstream",
		long: `Serves MCP at https://ADDR/mcp over TLS 1.3; every client needs a certificate from the mesh CA,
an active node record, and a grant to this node. The upstream is a Streamable HTTP MCP server
(--upstream) or a stdio MCP server command after "--", started once per client session: each
new session waits for it to start (with npx, seconds: npx resolves the package every time; install
the package and name its command instead, or run the server once behind --upstream).
The address is registered with the coordinator so that connectors find it by name.
At start, serve checks that the upstream command is found and that an upstream URL answers, and
warns when not (clients get JSON-RPC error -32043, upstream_error, until it works);
--require-upstream refuses to start instead.
DIR is locked while the gateway serves: a second 'serve' on it is refused and told which process
holds it.

Examples:
  agentmesh serve --state ./payments -- npx @modelcontextprotocol/server-postgres postgres://localhost/db
  agentmesh serve --state ./files --listen 0.0.0.0:7800 --advertise files.internal:7800 -- mcp-server-filesystem /srv
  agentmesh serve --state ./tools --upstream http://127.0.0.1:8080/mcp

A node of kind model serves an OpenAI-compatible API instead: --upstream is its base URL
(such as http://127.0.0.1:8000; a stdio command is a usage error), clients reach it through
'agentmesh connect model:NAME --listen 127.0.0.1:PORT', and limit counters are kept in DIR:
  agentmesh serve --state ./llm --upstream http://127.0.0.1:8000

With --tailnet the gateway also joins a tailnet (Tailscale, or Headscale with --ts-control-url)
as its own node, with tsnet (userspace, no root), and serves at http://NAME:PORT/mcp there:
WireGuard encrypts, each caller is identified with WhoIs, and the same per-message policy and
audit apply. The mTLS listener then runs only if --listen is given. Tool rules for tailnet
callers come from this mesh's policy (selectors agent:NODE, tag:TAG, user:LOGIN; the default)
or, with --tailnet-policy tailnet, from the tailnet policy file's grants of the app capability
` + engine.TailnetCapability + `. The auth key comes from $` + engine.TailnetAuthKeyEnv + ` (or --ts-authkey):
  TS_AUTHKEY=tskey-auth-... agentmesh serve --state ./tools --tailnet --tailnet-policy tailnet --upstream http://127.0.0.1:8080/mcp

With --ready-fd N, each listener that starts serving is announced as one JSON line on file
descriptor N (component, node, api, network, addr, url), for scripts and supervisors.

With --metrics ADDR, Prometheus metrics are served at http://ADDR/metrics (README, "Metrics"):
on loopback only, unless --metrics-allow-remote allows another address; never on the mesh listener.`,
		run: runServe,
	})
}

func runServe(ctx context.Context, env Env, args []string) error {
	c := commands["serve"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	cfg := engine.GatewayConfig{Caps: engine.DefaultCaps}
	fs.StringVar(&cfg.Listen, "listen", engine.DefaultGatewayListen, "`ADDR` to listen on")
	fs.StringVar(&cfg.Advertise, "advertise", "", "`HOST:PORT` registered for connectors (default: the listen address)")
	fs.StringVar(&cfg.UpstreamURL, "upstream", "", "Streamable HTTP MCP server `URL` (for a model node: the OpenAI-compatible API's base URL)")
	fs.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", engine.DefaultMaxMessageBytes, "largest JSON-RPC message accepted from a client")
	fs.BoolVar(&cfg.RecordArgsHash, "record-args-hash", false, "store the SHA-256 of tool call arguments in audit events")
	fs.BoolVar(&cfg.RequireUpstream, "require-upstream", false, "refuse to start when the upstream command is not found or the upstream URL does not answer (default: warn and serve)")
	caps := &cfg.Caps
	fs.IntVar(&caps.RequestsPerPeer, "max-requests-per-peer", caps.RequestsPerPeer, "at most `N` requests in flight per client at once, open streams included")
	fs.IntVar(&caps.SessionsPerPeer, "max-sessions-per-peer", caps.SessionsPerPeer, "at most `N` open MCP sessions per client at once")
	fs.IntVar(&caps.ProcessesPerPeer, "max-processes-per-peer", caps.ProcessesPerPeer, "at most `N` stdio upstream processes per client at once")
	fs.IntVar(&caps.Processes, "max-processes", caps.Processes, "at most `N` stdio upstream processes for all clients together")
	fs.Int64Var(&caps.Bodies.Total, "body-budget", 0, "`BYTES` of request bodies held in memory at once, all clients together (default 64 × --max-message-bytes)")
	fs.Int64Var(&caps.Bodies.PerPeer, "body-budget-per-peer", 0, "`BYTES` of request bodies one client may have in memory at once (default 16 × --max-message-bytes)")
	fs.DurationVar(&caps.Bodies.Timeout, "body-timeout", caps.Bodies.Timeout, "a request body must arrive whole within `DURATION`")
	verbose := fs.Bool("v", false, "log to stderr at debug level")
	tf := addTailnetFlags(fs, true)
	readyFD := readyFlag(fs)
	mc := metricsFlags(fs)
	var closeReady func()
	pos, rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (put the upstream command after --)", pos[0])
	}
	if (cfg.UpstreamURL == "") == (len(rest) == 0) {
		return usagef("give exactly one upstream: --upstream URL or -- COMMAND [ARGS...]")
	}
	if cfg.Tailnet, err = tf.config(fs, env); err != nil {
		return err
	}
	if cfg.Tailnet != nil && !flagGiven(fs, "listen") {
		cfg.Listen = "" // tailnet only, unless an mTLS listener is asked for
	}
	if err := needState(*state); err != nil {
		return err
	}
	if cfg.Ready, closeReady, err = servingSignal(env, *readyFD); err != nil {
		return err
	}
	defer closeReady()
	cfg.State, cfg.UpstreamCommand, cfg.Metrics = *state, rest, *mc
	// Info: the operator sees each upstream process a session starts, and
	// when it is ready (seconds, with npx), each refusal and the upstream's
	// stderr.
	cfg.Logger = newLogger(env, *verbose, slog.LevelInfo)
	return engine.ServeGateway(ctx, cfg)
}

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// printServing tells people what started serving: a gateway on stdout, a
// connector on stderr (its stdout may be the MCP channel).
func printServing(env Env, s engine.Serving) {
	if s.Traces != "" {
		out := env.Stdout
		if s.Component == "connector" {
			out = env.Stderr
		}
		printf(out, "%s: traces: exporting to %s\n", s.Component, s.Traces)
	}
	if s.API == "metrics" {
		w := env.Stdout
		if s.Component == "connector" {
			w = env.Stderr // a connector's stdout may be the MCP channel
		}
		printf(w, "%s: serving metrics at %s\n", s.Component, s.URL)
		return
	}
	switch s.Component {
	case "gateway":
		what, note := "MCP", ""
		if s.API == "model" {
			what, note = "the model API", " (upstream "+s.Upstream+")"
		}
		if s.Network == "tailnet" {
			printf(env.Stdout, "gateway %s serving %s on the tailnet at %s (rules: %s)%s\n", s.Node, what, s.URL, s.Rules, note)
			return
		}
		printf(env.Stdout, "gateway %s serving %s at %s%s\n", s.Node, what, s.URL, note)
	case "connector":
		switch {
		case s.Network == "stdio":
		case s.Network == "unix":
			path := "/mcp"
			if s.API == "model" {
				path = "/v1"
			}
			printf(env.Stderr, "connect: serving %s at %s, HTTP path %s (only this user may open the socket)\n", s.Service, s.URL, path)
		case s.NoToken:
			printf(env.Stderr, "connect: serving %s at %s%s\n", s.Service, s.URL, baseURLNote(s))
			printf(env.Stderr, "connect: warning: --no-token: every local user and process can act as this agent through %s\n", s.URL)
		default:
			printf(env.Stderr, "connect: serving %s at %s%s\n", s.Service, s.URL, baseURLNote(s))
			if s.API == "model" {
				printf(env.Stderr, "connect: token in %s: send it as the API key (OPENAI_API_KEY=$(cat %s))\n", s.TokenFile, s.TokenFile)
			} else {
				printf(env.Stderr, "connect: token in %s: send it as Authorization: Bearer TOKEN\n", s.TokenFile)
			}
		}
	}
}

// baseURLNote marks a model endpoint's URL as the OpenAI base URL.
func baseURLNote(s engine.Serving) string {
	if s.API == "model" {
		return " (OPENAI_BASE_URL)"
	}
	return ""
}

// newLogger logs to stderr from level on, or everything with -v.
func newLogger(env Env, verbose bool, level slog.Level) *slog.Logger {
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
}
