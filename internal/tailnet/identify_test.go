package tailnet

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// fakeWhoIs answers WhoIs from a table by remote address.
type fakeWhoIs map[string]*apitype.WhoIsResponse

func (f fakeWhoIs) WhoIs(_ context.Context, addr string) (*apitype.WhoIsResponse, error) {
	if w, ok := f[addr]; ok {
		return w, nil
	}
	return nil, errors.New("no such peer")
}

func who(name, stableID string, tags []string, login string, caps ...string) *apitype.WhoIsResponse {
	w := &apitype.WhoIsResponse{
		Node:        &tailcfg.Node{Name: name, StableID: tailcfg.StableNodeID(stableID), Tags: tags},
		UserProfile: &tailcfg.UserProfile{LoginName: login},
	}
	if len(caps) > 0 {
		raw := make([]tailcfg.RawMessage, len(caps))
		for i, c := range caps {
			raw[i] = tailcfg.RawMessage(c)
		}
		w.CapMap = tailcfg.PeerCapMap{CapabilityMCP: raw}
	}
	return w
}

func identifyAt(t *testing.T, id *Identifier, addr string) (*admission.Caller, reason.Code) {
	t.Helper()
	r := httptest.NewRequest("POST", "http://tools/mcp", nil)
	r.RemoteAddr = addr
	return id.Identify(r, &admission.State{})
}

func TestIdentifierNamesCallerFromWhoIs(t *testing.T) {
	peers := fakeWhoIs{
		"100.64.0.1:1": who("agent-1.tail.ts.net.", "n1", []string{"tag:agents", "tag:Not_Valid!"}, "tagged-devices"),
		"100.64.0.2:1": who("laptop.tail.ts.net.", "n2", nil, "alice@example.com"),
		"100.64.0.3:1": who("Bad_Name.tail.ts.net.", "n3", nil, "bob@example.com"),
		"100.64.0.4:1": {Node: &tailcfg.Node{Name: "nostable.tail.ts.net."}},
		"100.64.0.5:1": who("Bad_Name.tail.ts.net.", "n5", []string{"tag:agents"}, ""),
		"100.64.0.6:1": who("orphan.tail.ts.net.", "n6", nil, ""),
		"100.64.0.7:1": who("desk.tail.ts.net.", "n7", nil, "Carol@Example.COM"),
	}
	id := NewIdentifier(peers, IdentifierConfig{})
	tests := []struct {
		addr   string
		reason reason.Code
		node   policy.Node
		src    string
		key    string
	}{
		{"100.64.0.1:1", "", policy.Node{Name: "agent-1", Kind: identity.KindAgent, Tags: []identity.Tag{"tag:agents"}},
			"tailnet:agent-1.tail.ts.net", "tailnet:n1"},
		// A person's device: its owner identifies it, never its self-chosen
		// name, which need not even be an agentmesh name.
		{"100.64.0.2:1", "", policy.Node{Kind: identity.KindAgent, Tags: []identity.Tag{}, User: "alice@example.com"},
			"tailnet:laptop.tail.ts.net/alice@example.com", "tailnet:n2"},
		{"100.64.0.3:1", "", policy.Node{Kind: identity.KindAgent, Tags: []identity.Tag{}, User: "bob@example.com"},
			"tailnet:Bad_Name.tail.ts.net/bob@example.com", "tailnet:n3"},
		// Logins are folded to lower case, as selectors and mesh owners are.
		{"100.64.0.7:1", "", policy.Node{Kind: identity.KindAgent, Tags: []identity.Tag{}, User: "carol@example.com"},
			"tailnet:desk.tail.ts.net/carol@example.com", "tailnet:n7"},
		{"100.64.0.5:1", reason.BadNodeName, policy.Node{}, "", ""},
		{"100.64.0.6:1", reason.WhoIsFailed, policy.Node{}, "", ""},
		{"100.64.0.4:1", reason.WhoIsFailed, policy.Node{}, "", ""},
		{"100.64.0.9:1", reason.WhoIsFailed, policy.Node{}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c, reason := identifyAt(t, id, tt.addr)
			if reason != tt.reason {
				t.Fatalf("reason = %q, want %q", reason, tt.reason)
			}
			if tt.reason != "" {
				if c != nil {
					t.Fatalf("refused caller returned as %+v", c)
				}
				return
			}
			if c.Node.Name != tt.node.Name || c.Node.Kind != tt.node.Kind || !slices.Equal(c.Node.Tags, tt.node.Tags) || c.Node.User != tt.node.User {
				t.Fatalf("node = %+v, want %+v", c.Node, tt.node)
			}
			if c.Src != tt.src || c.Key != tt.key || c.Addr != tt.addr || c.Policy != nil {
				t.Fatalf("caller = src %q key %q addr %q policy %v, want src %q key %q addr %q and no policy", c.Src, c.Key, c.Addr, c.Policy, tt.src, tt.key, tt.addr)
			}
		})
	}
}

func TestIdentifierTailnetSourceNeedsAValidCapability(t *testing.T) {
	peers := fakeWhoIs{
		"100.64.0.1:1": who("agent-1.tail.ts.net.", "n1", []string{"tag:agents"}, "", `{"tools": ["echo"]}`, `{"resources": ["file:///docs/*"]}`),
		"100.64.0.2:1": who("agent-2.tail.ts.net.", "n2", []string{"tag:agents"}, ""),
		"100.64.0.3:1": who("agent-3.tail.ts.net.", "n3", []string{"tag:agents"}, "", `{"tools": ["echo"], "Tools": ["drop"]}`),
		"100.64.0.4:1": who("agent-4.tail.ts.net.", "n4", []string{"tag:agents"}, "", `{"tools": ["echo"], "when": "args.x +"}`),
	}
	id := NewIdentifier(peers, IdentifierConfig{Source: SourceTailnet})
	c, why := identifyAt(t, id, "100.64.0.1:1")
	if why != "" || c.Policy == nil {
		t.Fatalf("caller with capabilities refused: %q", why)
	}
	self := policy.Node{Name: "tools", Kind: identity.KindTool}
	for _, tc := range []struct {
		req   policy.Request
		allow bool
	}{
		{policy.Request{Action: policy.ActionTool, Method: "tools/call", Tool: "echo"}, true},
		{policy.Request{Action: policy.ActionTool, Method: "tools/call", Tool: "drop"}, false},
		{policy.Request{Action: policy.ActionResource, Method: "resources/read", Resource: "file:///docs/a.txt"}, true},
		{policy.Request{Action: policy.ActionResource, Method: "resources/read", Resource: "file:///etc/passwd"}, false},
	} {
		tc.req.Src, tc.req.Dst = c.Node, self
		if d := c.Policy.Decide(tc.req); d.Allow != tc.allow {
			t.Errorf("%s %s%s: allow = %v, want %v (%s)", tc.req.Method, tc.req.Tool, tc.req.Resource, d.Allow, tc.allow, d.Reason)
		}
	}
	again, _ := identifyAt(t, id, "100.64.0.1:1")
	if again.Policy != c.Policy {
		t.Error("the same capability values were compiled twice")
	}
	for addr, want := range map[string]reason.Code{
		"100.64.0.2:1": reason.NoCapability,
		"100.64.0.3:1": reason.BadCapability,
		"100.64.0.4:1": reason.BadCapability,
	} {
		c, why := identifyAt(t, id, addr)
		if why != want {
			t.Errorf("%s: reason = %q, want %q", addr, why, want)
		}
		if c == nil || !strings.HasPrefix(c.Src, SrcPrefix) {
			t.Errorf("%s: a refused but identified caller should name its source for the audit event, got %+v", addr, c)
		}
	}
}

func TestDecodeCapabilityValueIsStrict(t *testing.T) {
	good := `{"tools": ["echo", "get_*"], "resources": ["file:///docs/*"], "prompts": ["p"], "models": ["llama-*"], "paths": ["GET /v1/files"], "when": "args.n <= 10"}`
	v, err := DecodeCapabilityValue([]byte(good))
	if err != nil {
		t.Fatalf("good value: %v", err)
	}
	if !slices.Equal(v.Tools, []string{"echo", "get_*"}) || v.When != "args.n <= 10" || len(v.Paths) != 1 {
		t.Fatalf("decoded %+v", v)
	}
	for name, raw := range map[string]string{
		"duplicate key":       `{"tools": ["a"], "tools": ["b"]}`,
		"case-variant key":    `{"tools": ["a"], "Tools": ["b"]}`,
		"unknown key":         `{"tools": ["a"], "tool": ["b"]}`,
		"comment":             `{"tools": ["a"] /* hi */}`,
		"trailing comma":      `{"tools": ["a"],}`,
		"not an object":       `["tools"]`,
		"number in list":      `{"tools": [1]}`,
		"list not array":      `{"tools": "a"}`,
		"when not string":     `{"tools": ["a"], "when": true}`,
		"no list at all":      `{"when": "true"}`,
		"empty object":        `{}`,
		"invalid json":        `{"tools": [`,
		"escaped key smuggle": `{"tools": ["a"], "\u0074ools": ["b"]}`,
	} {
		if _, err := DecodeCapabilityValue([]byte(raw)); !errors.Is(err, ErrCapability) {
			t.Errorf("%s: err = %v, want ErrCapability", name, err)
		}
	}
}

func TestCompileCapabilitiesBoundsValues(t *testing.T) {
	many := make([]tailcfg.RawMessage, MaxCapabilityValues+1)
	for i := range many {
		many[i] = `{"tools": ["a"]}`
	}
	if _, err := CompileCapabilities(many, "v"); !errors.Is(err, ErrCapability) {
		t.Errorf("%d values: err = %v, want ErrCapability", len(many), err)
	}
	big := tailcfg.RawMessage(`{"tools": ["` + strings.Repeat("a", MaxCapabilityBytes) + `"]}`)
	if _, err := CompileCapabilities([]tailcfg.RawMessage{big}, "v"); !errors.Is(err, ErrCapability) {
		t.Errorf("oversized value: err = %v, want ErrCapability", err)
	}
	if _, err := CompileCapabilities(nil, "v"); !errors.Is(err, ErrCapability) {
		t.Errorf("no values: err = %v, want ErrCapability", err)
	}
}
