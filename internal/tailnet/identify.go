package tailnet

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/tailscale/hujson"
	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// CapabilityMCP is the app capability a tailnet policy file grants to carry
// agentmesh rules (policy source SourceTailnet); see CapabilityValue.
const CapabilityMCP tailcfg.PeerCapability = "agentmesh.dev/cap/mcp"

// SrcPrefix starts the audit source of every tailnet caller:
// "tailnet:NODE" for a tagged node, "tailnet:NODE/LOGIN" for a node owned
// by a user, NODE being its MagicDNS name without the trailing dot.
const SrcPrefix = "tailnet:"

// Source says where the rules for tailnet callers come from.
type Source int

const (
	// SourceAgentmesh: agentmesh's own policy (from the coordinator)
	// decides; WhoIs only says who the caller is.
	SourceAgentmesh Source = iota
	// SourceTailnet: the tailnet policy file decides, through the values
	// of CapabilityMCP that it grants the caller towards this node.
	SourceTailnet
)

// ParseSource reads "agentmesh" or "tailnet".
func ParseSource(s string) (Source, error) {
	switch s {
	case "agentmesh":
		return SourceAgentmesh, nil
	case "tailnet":
		return SourceTailnet, nil
	}
	return 0, fmt.Errorf("policy source %q: %w: want agentmesh or tailnet", s, ErrConfig)
}

// String returns "agentmesh" or "tailnet".
func (s Source) String() string {
	if s == SourceTailnet {
		return "tailnet"
	}
	return "agentmesh"
}

// CapabilityValue is one value of CapabilityMCP in a tailnet grant, such as
//
//	{"tools": ["echo", "get_*"], "resources": ["file:///docs/*"],
//	 "prompts": ["summary"], "models": ["llama-*"],
//	 "when": "args.limit <= 100"}
//
// It becomes one agentmesh grant from the caller to this node with the same
// lists and condition (globs and `when` as in agentmesh policy). Unknown
// keys, duplicate keys, wrong types and non-standard JSON are errors, and an
// error refuses the caller.
type CapabilityValue struct {
	Tools     []string `json:"tools,omitempty"`
	Resources []string `json:"resources,omitempty"`
	Prompts   []string `json:"prompts,omitempty"`
	Models    []string `json:"models,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	When      string   `json:"when,omitempty"`
}

// MaxCapabilityValues bounds how many CapabilityMCP values one caller may
// carry, and MaxCapabilityBytes their total size.
const (
	MaxCapabilityValues = 64
	MaxCapabilityBytes  = 64 << 10
)

// maxCachedPolicies bounds the compiled-policy cache; it is emptied when
// full (tailnets have few distinct grant sets).
const maxCachedPolicies = 1024

// WhoIser answers who is behind a tailnet address; *Node is one.
type WhoIser interface {
	WhoIs(ctx context.Context, remoteAddr string) (*apitype.WhoIsResponse, error)
}

// Identifier identifies tailnet callers for the gateways (it implements
// admission.Identifier). Create it with NewIdentifier.
type Identifier struct {
	who    WhoIser
	source Source
	log    *slog.Logger

	mu    sync.Mutex
	cache map[[32]byte]cachedPolicy
}

// cachedPolicy is the outcome of compiling one set of capability values.
type cachedPolicy struct {
	pol *policy.Policy
	err error
}

// IdentifierConfig configures NewIdentifier.
type IdentifierConfig struct {
	// Source says where the rules come from (default SourceAgentmesh).
	Source Source
	// Logger receives refusals' details; nil discards them.
	Logger *slog.Logger
}

// NewIdentifier returns an Identifier asking who (a *Node) about callers.
func NewIdentifier(who WhoIser, cfg IdentifierConfig) *Identifier {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Identifier{who: who, source: cfg.Source, log: log, cache: make(map[[32]byte]cachedPolicy)}
}

var _ admission.Identifier = (*Identifier)(nil)

// Identify implements admission.Identifier: WhoIs on r's remote address.
func (id *Identifier) Identify(r *http.Request, st *admission.State) (*admission.Caller, reason.Code) {
	return id.identify(r.Context(), r.RemoteAddr)
}

// Recheck implements admission.Identifier: WhoIs again on the address c was
// identified on.
func (id *Identifier) Recheck(ctx context.Context, c *admission.Caller, st *admission.State) (*admission.Caller, reason.Code) {
	return id.identify(ctx, c.Addr)
}

// identify resolves addr to a caller, or a refusal reason.
func (id *Identifier) identify(ctx context.Context, addr string) (*admission.Caller, reason.Code) {
	who, err := id.who.WhoIs(ctx, addr)
	if err != nil || who == nil || who.Node == nil || who.Node.StableID == "" {
		id.log.Info("tailnet caller refused: whois failed", "addr", addr, "err", err)
		return nil, reason.WhoIsFailed
	}
	c, why := id.caller(who, addr)
	if c == nil {
		return nil, why
	}
	if id.source == SourceTailnet {
		pol, why := id.capabilityPolicy(who.CapMap[CapabilityMCP])
		if pol == nil {
			id.log.Info("tailnet caller refused", "peer", c.Src, "reason", why)
			return c, why // identified, refused: c.Src names the refusal
		}
		c.Policy = pol
	}
	return c, ""
}

// caller builds the admission caller of a WhoIs answer.
func (id *Identifier) caller(who *apitype.WhoIsResponse, addr string) (*admission.Caller, reason.Code) {
	n := who.Node
	fqdn := strings.TrimSuffix(n.Name, ".")
	src := SrcPrefix + fqdn
	pn := policy.Node{Kind: identity.KindAgent, Tags: make([]identity.Tag, 0, len(n.Tags))}
	if n.IsTagged() {
		// A tagged node belongs to the tailnet, whose tag owners decide
		// who may run it: its name stands for it, as agent:NAME.
		label, _, _ := strings.Cut(fqdn, ".")
		name, err := identity.ParseName(label)
		if err != nil {
			id.log.Info("tailnet caller refused: node name is not an agentmesh name", "node", fqdn, "err", err)
			return nil, reason.BadNodeName
		}
		pn.Name = name
		for _, t := range n.Tags {
			tag, err := identity.ParseTag(t)
			if err != nil {
				// Grants only allow: ignoring a tag can only take access away.
				id.log.Info("ignoring tailnet tag that is not an agentmesh tag", "node", fqdn, "tag", t)
				continue
			}
			pn.Tags = append(pn.Tags, tag)
		}
	} else {
		// A person's device is named by whoever joins it, so its name
		// proves nothing (a free name can be taken): only its owner's
		// login, which control vouches for, identifies it, as user:LOGIN.
		if who.UserProfile == nil || who.UserProfile.LoginName == "" {
			id.log.Info("tailnet caller refused: an untagged node without an owner", "node", fqdn)
			return nil, reason.WhoIsFailed
		}
		// In lower case (ASCII only), the one spelling user:LOGIN
		// selectors and mesh owners are compared in: a login spelled
		// Alice@Example.com is alice@example.com's.
		pn.User = identity.LowerLogin(who.UserProfile.LoginName)
		src += "/" + pn.User
	}
	return &admission.Caller{Node: pn, Src: src, Key: SrcPrefix + string(n.StableID), Addr: addr}, ""
}

// capabilityPolicy returns the compiled policy for a caller's
// CapabilityMCP values, compiling each distinct set once.
func (id *Identifier) capabilityPolicy(values []tailcfg.RawMessage) (*policy.Policy, reason.Code) {
	if len(values) == 0 {
		return nil, reason.NoCapability
	}
	h := sha256.New()
	var n [8]byte
	for _, v := range values {
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	var key [32]byte
	h.Sum(key[:0])
	id.mu.Lock()
	cp, ok := id.cache[key]
	id.mu.Unlock()
	if !ok {
		pol, err := CompileCapabilities(values, "tailnet-"+hex.EncodeToString(key[:6]))
		cp = cachedPolicy{pol: pol, err: err}
		if err != nil {
			id.log.Warn("tailnet capability refused", "capability", string(CapabilityMCP), "err", err)
		}
		id.mu.Lock()
		if len(id.cache) >= maxCachedPolicies {
			clear(id.cache)
		}
		id.cache[key] = cp
		id.mu.Unlock()
	}
	if cp.err != nil {
		return nil, reason.BadCapability
	}
	return cp.pol, ""
}

// CompileCapabilities turns the CapabilityMCP values granted to one caller
// into an agentmesh policy for that caller and this node: one grant per
// value. The values come from control for exactly this (caller, node)
// pair, so the grants select "*" on both sides. Any value that does not
// decode strictly, or a policy that does not compile, is an error wrapping
// ErrCapability.
func CompileCapabilities(values []tailcfg.RawMessage, version string) (*policy.Policy, error) {
	if len(values) == 0 {
		return nil, fmt.Errorf("compile capabilities: %w: no values", ErrCapability)
	}
	if len(values) > MaxCapabilityValues {
		return nil, fmt.Errorf("compile capabilities: %w: %d values (at most %d)", ErrCapability, len(values), MaxCapabilityValues)
	}
	type grant struct {
		Src []string `json:"src"`
		Dst []string `json:"dst"`
		CapabilityValue
	}
	doc := struct {
		Grants []grant `json:"grants"`
	}{}
	total := 0
	for i, raw := range values {
		total += len(raw)
		if total > MaxCapabilityBytes {
			return nil, fmt.Errorf("compile capabilities: %w: values exceed %d bytes", ErrCapability, MaxCapabilityBytes)
		}
		v, err := DecodeCapabilityValue([]byte(raw))
		if err != nil {
			return nil, fmt.Errorf("compile capabilities: value %d: %w", i, err)
		}
		doc.Grants = append(doc.Grants, grant{Src: []string{"*"}, Dst: []string{"*"}, CapabilityValue: v})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("compile capabilities: %w: %w", ErrCapability, err)
	}
	pol, err := policy.Compile(b, version)
	if err != nil {
		return nil, fmt.Errorf("compile capabilities: %w: %w", ErrCapability, err)
	}
	return pol, nil
}

// DecodeCapabilityValue decodes one CapabilityMCP value strictly: a
// standard JSON object with only CapabilityValue's keys, each at most once,
// lists of strings and a string `when`, and at least one list.
func DecodeCapabilityValue(raw []byte) (CapabilityValue, error) {
	var v CapabilityValue
	root, err := hujson.Parse(raw)
	if err != nil {
		return v, fmt.Errorf("%w: %w", ErrCapability, err)
	}
	if !root.IsStandard() {
		return v, fmt.Errorf("%w: not standard JSON (comments or trailing commas)", ErrCapability)
	}
	obj, ok := root.Value.(*hujson.Object)
	if !ok {
		return v, fmt.Errorf("%w: want a JSON object", ErrCapability)
	}
	seen := make(map[string]bool, len(obj.Members))
	lists := 0
	for _, m := range obj.Members {
		lit, _ := m.Name.Value.(hujson.Literal)
		name := lit.String()
		if seen[name] {
			return v, fmt.Errorf("%w: key %q appears twice", ErrCapability, name)
		}
		seen[name] = true
		var dst *[]string
		switch name {
		case "tools":
			dst = &v.Tools
		case "resources":
			dst = &v.Resources
		case "prompts":
			dst = &v.Prompts
		case "models":
			dst = &v.Models
		case "paths":
			dst = &v.Paths
		case "when":
			s, ok := m.Value.Value.(hujson.Literal)
			if !ok || s.Kind() != '"' {
				return v, fmt.Errorf("%w: when: want a string", ErrCapability)
			}
			v.When = s.String()
			continue
		default:
			return v, fmt.Errorf("%w: unknown key %q (want tools, resources, prompts, models, paths or when)", ErrCapability, name)
		}
		arr, ok := m.Value.Value.(*hujson.Array)
		if !ok {
			return v, fmt.Errorf("%w: %s: want a list of strings", ErrCapability, name)
		}
		list := make([]string, 0, len(arr.Elements))
		for _, e := range arr.Elements {
			s, ok := e.Value.(hujson.Literal)
			if !ok || s.Kind() != '"' {
				return v, fmt.Errorf("%w: %s: want a list of strings", ErrCapability, name)
			}
			list = append(list, s.String())
		}
		*dst = list
		lists++
	}
	if lists == 0 {
		return v, fmt.Errorf("%w: no tools, resources, prompts, models or paths", ErrCapability)
	}
	return v, nil
}
