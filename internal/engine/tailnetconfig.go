package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// TailnetConfig is Tailscale mode: the gateway or connector joins a tailnet
// (Tailscale, or Headscale) as its own node with tsnet, in userspace.
type TailnetConfig struct {
	// Hostname is the process's name on the tailnet; "" is the node's
	// agentmesh name (then a state directory is required).
	Hostname string
	// ControlURL is the coordination server; "" is Tailscale's.
	ControlURL string
	// StateDir keeps the tailnet keys; "" is tailnet/ in the node's state
	// directory.
	StateDir string
	// AuthKey authorises the join; "" reads $TS_AUTHKEY.
	AuthKey string
	// Tags are requested for the node (tag:NAME); the tailnet's tag owners
	// decide.
	Tags []string
	// Port is the gateway's tailnet port; 0 is 80.
	Port int
	// Rules says where a tailnet gateway's tool rules for tailnet callers
	// come from: RulesAgentmesh ("" too) or RulesTailnet. Gateways only.
	Rules string
}

// Sources of a tailnet gateway's tool rules (TailnetConfig.Rules).
const (
	// RulesAgentmesh: this mesh's policy, with selectors from WhoIs
	// (agent:NODE, tag:TAG, user:LOGIN).
	RulesAgentmesh = "agentmesh"
	// RulesTailnet: the tailnet policy file's grants of the app capability
	// TailnetCapability.
	RulesTailnet = "tailnet"
)

// TailnetAuthKeyEnv is the environment variable TailnetConfig.AuthKey
// defaults to.
const TailnetAuthKeyEnv = "TS_AUTHKEY"

// TailnetCapability is the app capability whose grants in a tailnet policy
// file carry tool rules (RulesTailnet).
const TailnetCapability = "agentmesh.dev/cap/mcp"

// CheckTailnet reports what is wrong in c, as an error wrapping ErrConfig,
// or ErrNoTailnet in a binary built without the tailnet mode. gateway says
// whether c configures a gateway (Rules applies only there).
func CheckTailnet(c TailnetConfig, gateway bool) error {
	if !TailnetBuilt {
		return ErrNoTailnet
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("%w: tailnet port %d: want 1-65535", ErrConfig, c.Port)
	}
	for _, t := range c.Tags {
		if _, err := identity.ParseTag(t); err != nil {
			return fmt.Errorf("%w: tailnet tags: %v", ErrConfig, err)
		}
	}
	if c.Hostname != "" {
		if _, err := identity.ParseName(c.Hostname); err != nil {
			return fmt.Errorf("%w: tailnet hostname: %v (gateways identify callers by this name, as agent:NAME)", ErrConfig, err)
		}
	}
	switch {
	case c.Rules == "" || c.Rules == RulesAgentmesh || c.Rules == RulesTailnet && gateway:
	case !gateway:
		return fmt.Errorf("%w: tailnet rules are a gateway's setting", ErrConfig)
	default:
		return fmt.Errorf("%w: tailnet rules %q: want %s or %s", ErrConfig, c.Rules, RulesAgentmesh, RulesTailnet)
	}
	return nil
}

// resolve fills c's defaults from the node's state directory and name
// (either may be empty).
func (c TailnetConfig) resolve(state string, name identity.Name) (TailnetConfig, error) {
	if c.Hostname == "" {
		c.Hostname = string(name)
	}
	if c.Hostname == "" {
		return c, fmt.Errorf("%w: give the tailnet hostname (or a state directory, whose node name is the default)", ErrConfig)
	}
	if c.StateDir == "" && state != "" {
		c.StateDir = filepath.Join(state, "tailnet")
	}
	if c.StateDir == "" {
		return c, fmt.Errorf("%w: give a tailnet state directory, where this process keeps its tailnet keys (or a state directory)", ErrConfig)
	}
	if c.AuthKey == "" {
		c.AuthKey = os.Getenv(TailnetAuthKeyEnv)
	}
	if c.Port == 0 {
		c.Port = 80
	}
	if c.Rules == "" {
		c.Rules = RulesAgentmesh
	}
	return c, nil
}

// listenAddr is the tailnet listen address of a gateway.
func (c TailnetConfig) listenAddr() string { return ":" + strconv.Itoa(c.Port) }

// rulesNote says where a tailnet gateway's tool rules come from.
func (c TailnetConfig) rulesNote() string {
	if c.Rules == RulesTailnet {
		return "the tailnet policy's " + TailnetCapability + " grants"
	}
	return "this mesh's policy"
}
