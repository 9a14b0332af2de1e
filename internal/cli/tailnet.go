package cli

import (
	"flag"
	"strings"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// tailnetFlags are the flags of Tailscale mode, shared by serve and
// connect.
type tailnetFlags struct {
	on                                      *bool
	hostname, controlURL, stateDir, authKey *string
	tags                                    *string
	port                                    *int
	rules                                   *string // serve only
	serve                                   bool
}

// addTailnetFlags adds the --tailnet and --ts-* flags; serve also gets
// --tailnet-policy.
func addTailnetFlags(fs *flag.FlagSet, serve bool) *tailnetFlags {
	use := "join a tailnet (Tailscale or Headscale) with tsnet and dial the gateway there instead of over mTLS"
	if serve {
		use = "join a tailnet (Tailscale or Headscale) with tsnet and serve there too (instead of mTLS unless --listen is given)"
	}
	tf := &tailnetFlags{
		serve:      serve,
		on:         fs.Bool("tailnet", false, use),
		hostname:   fs.String("ts-hostname", "", "this process's `NAME` on the tailnet (default: the node's agentmesh name)"),
		controlURL: fs.String("ts-control-url", "", "coordination server `URL`, such as a Headscale server's (default: Tailscale's)"),
		stateDir:   fs.String("ts-state", "", "tailnet state `DIR` (default: tailnet/ in --state)"),
		authKey:    fs.String("ts-authkey", "", "tailnet auth `KEY` (default $"+engine.TailnetAuthKeyEnv+"; prefer it: flags show in ps)"),
		tags:       fs.String("ts-tags", "", "comma-separated tailnet `TAGS` to request for this node (tag:NAME; the tailnet's tag owners decide)"),
		port:       fs.Int("ts-port", 80, "tailnet `PORT` of the gateway"),
	}
	if serve {
		tf.rules = fs.String("tailnet-policy", engine.RulesAgentmesh, "`SOURCE` of the tool rules for tailnet callers: "+engine.RulesAgentmesh+" (this mesh's policy, selectors from WhoIs) or "+engine.RulesTailnet+" (the app capability "+engine.TailnetCapability+" in the tailnet policy file)")
	}
	return tf
}

// config returns the tailnet configuration the flags ask for: nil without
// --tailnet (when a --ts-* flag is a usage error), else checked.
func (tf *tailnetFlags) config(fs *flag.FlagSet, env Env) (*engine.TailnetConfig, error) {
	if !*tf.on {
		var stray string
		fs.Visit(func(f *flag.Flag) {
			if strings.HasPrefix(f.Name, "ts-") || f.Name == "tailnet-policy" {
				stray = f.Name
			}
		})
		if stray != "" {
			return nil, usagef("--%s needs --tailnet", stray)
		}
		return nil, nil
	}
	if *tf.port < 1 || *tf.port > 65535 {
		return nil, usagef("--ts-port %d: want 1-65535", *tf.port)
	}
	c := &engine.TailnetConfig{Hostname: *tf.hostname, ControlURL: *tf.controlURL, StateDir: *tf.stateDir,
		AuthKey: *tf.authKey, Port: *tf.port}
	if c.AuthKey == "" {
		c.AuthKey = env.Getenv(engine.TailnetAuthKeyEnv)
	}
	if *tf.tags != "" {
		c.Tags = strings.Split(*tf.tags, ",")
	}
	if tf.rules != nil {
		c.Rules = *tf.rules
	}
	if err := engine.CheckTailnet(*c, tf.serve); err != nil {
		return nil, err
	}
	return c, nil
}
