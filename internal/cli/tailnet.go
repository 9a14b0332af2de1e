package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"agentmesh/internal/connector"
	"agentmesh/internal/identity"
	"agentmesh/internal/loopback"
	"agentmesh/internal/nodestate"
	"agentmesh/internal/tailnet"
)

// tailnetFlags are the flags of Tailscale mode, shared by serve and
// connect.
type tailnetFlags struct {
	on         *bool
	hostname   *string
	controlURL *string
	stateDir   *string
	authKey    *string
	tags       *string
	port       *int
	source     *string // serve only
}

// addTailnetFlags adds the --tailnet and --ts-* flags; serve also gets
// --tailnet-policy.
func addTailnetFlags(fs *flag.FlagSet, serve bool) *tailnetFlags {
	use := "join a tailnet (Tailscale or Headscale) with tsnet and dial the gateway there instead of over mTLS"
	if serve {
		use = "join a tailnet (Tailscale or Headscale) with tsnet and serve there too (instead of mTLS unless --listen is given)"
	}
	tf := &tailnetFlags{
		on:         fs.Bool("tailnet", false, use),
		hostname:   fs.String("ts-hostname", "", "this process's `NAME` on the tailnet (default: the node's agentmesh name)"),
		controlURL: fs.String("ts-control-url", "", "coordination server `URL`, such as a Headscale server's (default: Tailscale's)"),
		stateDir:   fs.String("ts-state", "", "tailnet state `DIR` (default: tailnet/ in --state)"),
		authKey:    fs.String("ts-authkey", "", "tailnet auth `KEY` (default $"+tailnet.AuthKeyEnv+"; prefer it: flags show in ps)"),
		tags:       fs.String("ts-tags", "", "comma-separated tailnet `TAGS` to request for this node (tag:NAME; the tailnet's tag owners decide)"),
		port:       fs.Int("ts-port", 80, "tailnet `PORT` of the gateway"),
	}
	if serve {
		tf.source = fs.String("tailnet-policy", "agentmesh", "`SOURCE` of the tool rules for tailnet callers: agentmesh (this mesh's policy, selectors from WhoIs) or tailnet (the app capability "+string(tailnet.CapabilityMCP)+" in the tailnet policy file)")
	}
	return tf
}

// check reports flags given without --tailnet, and bad values.
func (tf *tailnetFlags) check(fs *flag.FlagSet) error {
	if !*tf.on {
		var stray string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "tailnet" && (len(f.Name) > 3 && f.Name[:3] == "ts-" || f.Name == "tailnet-policy") {
				stray = f.Name
			}
		})
		if stray != "" {
			return usagef("--%s needs --tailnet", stray)
		}
		return nil
	}
	if *tf.port < 1 || *tf.port > 65535 {
		return usagef("--ts-port %d: want 1-65535", *tf.port)
	}
	if _, err := tf.tagList(); err != nil {
		return usagef("--ts-tags: %v", err)
	}
	if *tf.hostname != "" {
		if _, err := identity.ParseName(*tf.hostname); err != nil {
			return usagef("--ts-hostname: %v (gateways identify callers by this name, as agent:NAME)", err)
		}
	}
	if tf.source != nil {
		if _, err := tailnet.ParseSource(*tf.source); err != nil {
			return usagef("--tailnet-policy: %v", err)
		}
	}
	return nil
}

// tagList returns the --ts-tags list.
func (tf *tailnetFlags) tagList() ([]string, error) {
	if *tf.tags == "" {
		return nil, nil
	}
	tags := strings.Split(*tf.tags, ",")
	for _, t := range tags {
		if _, err := identity.ParseTag(t); err != nil {
			return nil, err
		}
	}
	return tags, nil
}

// sourceOf returns the --tailnet-policy value (agentmesh without the flag).
func (tf *tailnetFlags) sourceOf() tailnet.Source {
	if tf.source == nil {
		return tailnet.SourceAgentmesh
	}
	s, _ := tailnet.ParseSource(*tf.source) // checked by check
	return s
}

// tailnetOptions is Tailscale mode as serve and connect run it.
type tailnetOptions struct {
	hostname, controlURL, stateDir, authKey string
	tags                                    []string
	port                                    int
	source                                  tailnet.Source
}

// options resolves the defaults of tf against the agentmesh state
// directory and node name (either may be empty).
func (tf *tailnetFlags) options(env Env, state string, name identity.Name) (*tailnetOptions, error) {
	tags, _ := tf.tagList() // checked by check
	o := &tailnetOptions{hostname: *tf.hostname, controlURL: *tf.controlURL, stateDir: *tf.stateDir,
		authKey: *tf.authKey, tags: tags, port: *tf.port, source: tf.sourceOf()}
	if o.hostname == "" {
		o.hostname = string(name)
	}
	if o.hostname == "" {
		return nil, usagef("give --ts-hostname NAME (or --state DIR, whose node name is the default)")
	}
	if o.stateDir == "" && state != "" {
		o.stateDir = filepath.Join(state, "tailnet")
	}
	if o.stateDir == "" {
		return nil, usagef("give --ts-state DIR, where this process keeps its tailnet keys (or --state DIR)")
	}
	if o.authKey == "" {
		o.authKey = env.Getenv(tailnet.AuthKeyEnv)
	}
	return o, nil
}

// join brings this process up on the tailnet as tf says, with defaults from
// the agentmesh state directory and node name (either may be empty).
func (tf *tailnetFlags) join(ctx context.Context, env Env, state string, name identity.Name, log *slog.Logger) (*tailnet.Node, *tailnetOptions, error) {
	o, err := tf.options(env, state, name)
	if err != nil {
		return nil, nil, err
	}
	n, err := tailnet.Join(ctx, tailnet.Config{Hostname: o.hostname, StateDir: o.stateDir,
		ControlURL: o.controlURL, AuthKey: o.authKey, Tags: o.tags, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("tailnet: %w (is the auth key valid, and the control server reachable?)", err)
	}
	return n, o, nil
}

// listenAddr is the tailnet listen address of a gateway.
func (o *tailnetOptions) listenAddr() string { return ":" + strconv.Itoa(o.port) }

// connectTailnet runs a connector to service over the tailnet until ctx
// ends: on ln when it is not nil (which it closes, admitting clients by
// auth), else over env's stdin and stdout.
func connectTailnet(ctx context.Context, env Env, state, service string, ln net.Listener, auth loopback.Auth, tf *tailnetFlags, log *slog.Logger) (err error) {
	defer func() {
		if err != nil && ln != nil {
			ln.Close()
		}
	}()
	kind, host, err := parseTailnetService(service)
	if err != nil {
		return err
	}
	var name identity.Name
	if state != "" {
		d, err := nodestate.Open(state)
		if err != nil {
			return err
		}
		c, err := d.Config()
		if err != nil {
			return err
		}
		id, err := c.ID()
		if err != nil {
			return err
		}
		name = id.Name
	}
	tn, o, err := tf.join(ctx, env, state, name, log)
	if err != nil {
		return err
	}
	defer tn.Close()
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(o.port))
	resolve := func(context.Context) (string, error) { return base, nil }
	return runConnector(ctx, env, kind, ln, auth, connector.Config{Dial: tn.Dial, Logger: log, Resolve: resolve})
}

// parseTailnetService reads "HOST", "tool:HOST" or "model:HOST", HOST a
// tailnet name such as "tools" or "tools.example.ts.net".
func parseTailnetService(s string) (identity.Kind, string, error) {
	kind, s, err := cutServiceKind(s)
	if err != nil {
		return "", "", err
	}
	if !validHostname(s) {
		return "", "", fmt.Errorf("SERVICE %q: want the gateway's tailnet name, such as tools or tools.example.ts.net", s)
	}
	return kind, s, nil
}

// validHostname reports whether s is a DNS name of letters, digits and
// hyphens in dot-separated labels of at most 63 characters.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
