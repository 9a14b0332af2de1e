package policy

import (
	"maps"
	"slices"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/toolpin"
	"github.com/tailscale/hujson"
)

// The tool_pins section is the policy's tool lockfile: for each tool server
// (a tool:NAME node), the reviewed definition of each of its tools, named
// by its hash (package toolpin), and what to do with a tool that has no
// pin:
//
//	"tool_pins": {
//	  "tool:files": {
//	    "pin": "enforce",            // or "warn" (the default), or "off"
//	    "tools": {"read_file": "sha256:3f1c..."},
//	  },
//	}
//
// A pinned tool whose current definition hashes differently is hidden
// from lists and its calls are refused (tool_changed), whatever the mode.
// The mode decides only for a tool with no pin: "enforce" treats it as
// changed, "warn" lets it through and reports it (the default, so that a
// mesh that pins nothing yet keeps working when it upgrades), "off" lets
// it through silently. A server with no entry is in "warn" mode.
//
// A server must be known: named as tool:NAME in some grant's dst
// (directly or through a group); a pin for a server no grant reaches
// would never be enforced, and is most likely a typo.

// Pin modes.
const (
	PinEnforce = "enforce"
	PinWarn    = "warn"
	PinOff     = "off"
)

// MaxPinnedTools bounds the pins of one server.
const MaxPinnedTools = 10_000

// PinStatus is how a tool's current definition stands against the policy.
type PinStatus string

// The statuses of a tool.
const (
	// Pinned: the definition matches its pin.
	Pinned PinStatus = "pinned"
	// Changed: the tool is pinned to another definition, or (under
	// "enforce") not pinned, or its definition is not known.
	Changed PinStatus = "changed"
	// Unpinned: no pin, and the mode lets the tool through ("warn").
	Unpinned PinStatus = "unpinned"
	// Unchecked: no pin, mode "off".
	Unchecked PinStatus = "unchecked"
)

// Allows reports whether a tool in status s may be listed and called.
func (s PinStatus) Allows() bool { return s != Changed }

type rawServerPins struct {
	server str
	mode   *str
	tools  map[string]str
}

// ServerPins is one server's entry of tool_pins.
type ServerPins struct {
	// Mode is PinEnforce, PinWarn or PinOff.
	Mode string
	// Tools maps a tool name to its pinned hash.
	Tools map[string]string
}

// toolPins decodes the tool_pins section.
func (d *decoder) toolPins(v *hujson.Value) []rawServerPins {
	var out []rawServerPins
	d.object(v, "tool_pins", func(server string, sv *hujson.Value) bool {
		path := "tool_pins." + server
		sp := rawServerPins{server: str{server, memberOffset(v, server)}, tools: map[string]str{}}
		d.object(sv, path, func(name string, fv *hujson.Value) bool {
			switch name {
			case "pin":
				if s, ok := d.string(fv, path+".pin"); ok {
					sp.mode = &s
				}
			case "tools":
				d.object(fv, path+".tools", func(tool string, hv *hujson.Value) bool {
					if len(sp.tools) == MaxPinnedTools {
						d.fail(hv.StartOffset, path+".tools", ErrInvalid, "more than %d pinned tools", MaxPinnedTools)
						return true
					}
					if h, ok := d.string(hv, path+".tools."+tool); ok {
						sp.tools[tool] = h
					}
					return true
				})
			default:
				return false
			}
			return true
		})
		out = append(out, sp)
		return true
	})
	return out
}

// compilePins checks the decoded tool_pins against p and stores them.
func (c *compiler) compilePins(p *Policy, raw []rawServerPins) {
	for _, sp := range raw {
		path := "tool_pins." + sp.server.s
		kind, name, ok := strings.Cut(sp.server.s, ":")
		if _, err := identity.ParseName(name); !ok || kind != string(identity.KindTool) || err != nil {
			c.d.fail(sp.server.off, path, ErrInvalid, "%q: pins belong to a tool server, written tool:NAME", sp.server.s)
			continue
		}
		if len(p.index[nodeKey{keyTool, name}]) == 0 {
			c.d.fail(sp.server.off, path, ErrInvalid, "pins for %s, which no grant's dst names: an unknown server (a typo?)", sp.server.s)
			continue
		}
		entry := ServerPins{Mode: PinWarn, Tools: make(map[string]string, len(sp.tools))}
		if sp.mode != nil {
			switch sp.mode.s {
			case PinEnforce, PinWarn, PinOff:
				entry.Mode = sp.mode.s
			default:
				c.d.fail(sp.mode.off, path+".pin", ErrInvalid, "unknown pin mode %q: want \"enforce\", \"warn\" or \"off\"", sp.mode.s)
			}
		}
		for _, tool := range slices.Sorted(maps.Keys(sp.tools)) {
			h := sp.tools[tool]
			if tool == "" {
				c.d.fail(h.off, path+".tools", ErrInvalid, "a pin needs a tool name")
				continue
			}
			if !toolpin.ValidHash(h.s) {
				c.d.fail(h.off, path+".tools."+tool, ErrInvalid, "malformed hash %q: want sha256: and 64 lower-case hex digits (agentmesh tools pin writes them)", h.s)
				continue
			}
			entry.Tools[tool] = h.s
		}
		if p.pins == nil {
			p.pins = map[string]ServerPins{}
		}
		p.pins[name] = entry
	}
}

// ToolPins returns the pins of the tool server named server (its node
// name, without "tool:"); a server with no entry is in "warn" mode with
// no pins. The map is shared: do not modify it.
func (p *Policy) ToolPins(server identity.Name) ServerPins {
	if p != nil {
		if sp, ok := p.pins[string(server)]; ok {
			return sp
		}
	}
	return ServerPins{Mode: PinWarn}
}

// HasToolPins reports whether the policy pins anything or sets a mode for
// any server.
func (p *Policy) HasToolPins() bool { return p != nil && len(p.pins) > 0 }

// CheckTool answers how the tool named tool of server stands, given the
// hash of its current definition (hash "" when the definition is not
// known).
func (sp ServerPins) CheckTool(tool, hash string) PinStatus {
	if want, ok := sp.Tools[tool]; ok {
		if hash == want {
			return Pinned
		}
		return Changed
	}
	switch sp.Mode {
	case PinEnforce:
		return Changed
	case PinOff:
		return Unchecked
	}
	return Unpinned
}

// projectedPins is a server's tool_pins entry in a projection.
type projectedPins struct {
	Pin   string            `json:"pin"`
	Tools map[string]string `json:"tools"`
}

// projectPins returns the tool_pins section of a projection for dst: its
// own entry, if any.
func (p *Policy) projectPins(dst Node) map[string]projectedPins {
	if dst.Kind != identity.KindTool {
		return nil
	}
	sp, ok := p.pins[string(dst.Name)]
	if !ok {
		return nil
	}
	return map[string]projectedPins{"tool:" + string(dst.Name): {Pin: sp.Mode, Tools: sp.Tools}}
}

// testPins checks a test's tools/call expectation against the pins of
// its dst, given the definition hashes the test says the server
// advertises: a call to a tool whose definition does not match its pin
// is refused as tool_changed, as a gateway refuses it.
func (p *Policy) testPins(dst Node, hashes map[string]str, d Decision, tool string) Decision {
	if hashes == nil || !d.Allow || dst.Kind != identity.KindTool {
		return d
	}
	h := hashes[tool].s
	if !p.ToolPins(dst.Name).CheckTool(tool, h).Allows() {
		d.Allow, d.Reason = false, reason.ToolChanged
	}
	return d
}

func (d *decoder) testHashes(v *hujson.Value, path string) map[string]str {
	out := map[string]str{}
	d.object(v, path, func(tool string, hv *hujson.Value) bool {
		if h, ok := d.string(hv, path+"."+tool); ok {
			if !toolpin.ValidHash(h.s) {
				d.fail(h.off, path+"."+tool, ErrInvalid, "malformed hash %q", h.s)
			}
			out[tool] = h
		}
		return true
	})
	return out
}

// ToolPin is how one reported tool definition stands against the policy's
// pins: what 'agentmesh tools list' and the service catalog show.
type ToolPin struct {
	// Mode is the server's pin mode; Pinned the tool's pinned hash, ""
	// when it has none.
	Mode, Pinned string
	Status       PinStatus
}

// CheckPin answers how the tool named tool of the tool server named
// server stands, given the hash of the definition its gateway reports. A
// nil Policy pins nothing (mode warn).
func (p *Policy) CheckPin(server identity.Name, tool, hash string) ToolPin {
	sp := p.ToolPins(server)
	return ToolPin{Mode: sp.Mode, Pinned: sp.Tools[tool], Status: sp.CheckTool(tool, hash)}
}
