package tailnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"tailscale.com/tailcfg"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/gateway"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/tailnet"
	"github.com/agentmesh/agentmesh/internal/tailnet/tailnettest"
)

const magicDNS = tailnettest.MagicDNS

// tailnetGateway serves a gateway on node's port, identifying callers with
// source, re-checking sessions on netmap changes. It is stopped at cleanup.
func tailnetGateway(tb testing.TB, node *tailnet.Node, port string, src tailnet.Source, up *gatewaytest.Upstream, rec admission.Recorder, st *admission.State, rechecked chan<- struct{}) *gateway.Gateway {
	tb.Helper()
	g, err := gateway.New(gateway.Config{
		Upstream:   gateway.HTTPUpstream{URL: up.URL},
		Audit:      rec,
		Identifier: tailnet.NewIdentifier(node, tailnet.IdentifierConfig{Source: src}),
	}, st)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := node.Listen(":" + port)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := g.Serve(ctx, ln); err != nil {
			tb.Errorf("serve: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		err := node.WatchNetmap(ctx, 50*time.Millisecond, func(ctx context.Context) {
			g.Recheck(ctx)
			if rechecked != nil {
				select {
				case rechecked <- struct{}{}:
				default:
				}
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("watch netmap: %v", err)
		}
	}()
	tb.Cleanup(func() { cancel(); wg.Wait() })
	return g
}

// toolsSelf is the gateway's own node as policy sees it.
var toolsSelf = policy.Node{Name: "tools", Kind: identity.KindTool, Tags: []identity.Tag{"tag:tools"}}

// connect opens an MCP session from node to the gateway at host:port.
func connect(tb testing.TB, ctx context.Context, node *tailnet.Node, host, port string, opts *mcp.ClientOptions) *mcp.ClientSession {
	tb.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return node.Dial(ctx, network, addr)
		},
	}}
	tb.Cleanup(hc.CloseIdleConnections)
	client := mcp.NewClient(&mcp.Implementation{Name: "tailnet-test", Version: "1"}, opts)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: "http://" + host + "." + magicDNS + ":" + port + "/mcp", HTTPClient: hc,
	}, nil)
	if err != nil {
		tb.Fatalf("connect to %s over the tailnet: %v", host, err)
	}
	tb.Cleanup(func() { cs.Close() })
	return cs
}

// post sends one JSON-RPC message from node to the gateway at host:port on
// a new connection and returns the HTTP status and body.
func post(tb testing.TB, ctx context.Context, node *tailnet.Node, host, port, msg string) (int, string) {
	tb.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return node.Dial(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+host+"."+magicDNS+":"+port+"/mcp", strings.NewReader(msg))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		tb.Fatalf("post over the tailnet: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func toolNames(tb testing.TB, ctx context.Context, cs *mcp.ClientSession) []string {
	tb.Helper()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		tb.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, t := range res.Tools {
		names = append(names, t.Name)
	}
	return names
}

// callErr calls tool and returns the call's error (nil: it ran).
func callErr(ctx context.Context, cs *mcp.ClientSession, tool string) error {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"text": "hi"}})
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("tool returned an error result")
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]bool)
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

// TestTailnetEnforcesCapabilitiesAndPolicy runs the whole Tailscale mode in
// one loopback-only network namespace: tsnet nodes on tailscale's test
// control server, MCP over the tailnet through the gateway, rules from the
// tailnet's app capabilities and from agentmesh's own policy.
func TestTailnetEnforcesCapabilitiesAndPolicy(t *testing.T) {
	if !tailnettest.InLoopbackNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	tn := tailnettest.New(t)
	tn.SetCaps(`{"tools": ["echo", "query"]}`)
	gwNode := tn.Join(t, ctx, "tools", "tag:tools")
	agent := tn.Join(t, ctx, "agent-1", "tag:agents")
	human := tn.Join(t, ctx, "laptop")
	up := gatewaytest.NewUpstream(t)
	rec := gatewaytest.NewRecorder()

	// Source 1: the tailnet policy file's app capability.
	rechecked := make(chan struct{}, 1)
	tailnetGateway(t, gwNode, "80", tailnet.SourceTailnet, up, rec, &admission.State{Self: toolsSelf}, rechecked)

	// Source 2: agentmesh's own policy, selectors from WhoIs.
	hst, err := human.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	login := hst.User[hst.Self.UserID].LoginName
	if login == "" {
		t.Fatal("test control server gave the untagged node no login")
	}
	pol, err := policy.Compile([]byte(`{"grants": [
		{"src": ["tag:agents"], "dst": ["tag:tools"], "tools": ["query"]},
		{"src": ["user:`+identity.LowerLogin(login)+`"], "dst": ["tool:tools"], "tools": ["echo"]},
	]}`), "1")
	if err != nil {
		t.Fatal(err)
	}
	tailnetGateway(t, gwNode, "81", tailnet.SourceAgentmesh, up, rec, &admission.State{Self: toolsSelf, Policy: pol}, nil)

	listChanged := make(chan struct{}, 8)
	cs := connect(t, ctx, agent, "tools", "80", &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		},
	})

	t.Run("DirectPathIsLoopback", func(t *testing.T) {
		gst, err := gwNode.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ip := gst.TailscaleIPs[0]
		lc, err := agent.Server().LocalClient()
		if err != nil {
			t.Fatal(err)
		}
		var endpoint string
		for i := 0; i < 50 && endpoint == ""; i++ { // each ping is a round trip; the first go through DERP
			pr, err := lc.Ping(ctx, ip, tailcfg.PingDisco)
			if err != nil {
				t.Fatalf("disco ping: %v", err)
			}
			endpoint = pr.Endpoint
		}
		host, _, err := net.SplitHostPort(endpoint)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("direct path endpoint = %q, want 127.0.0.1:PORT", endpoint)
		}
		ast, err := agent.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var cur string
		for _, p := range ast.Peer {
			if len(p.TailscaleIPs) > 0 && p.TailscaleIPs[0] == ip {
				cur = p.CurAddr
			}
		}
		if h, _, _ := net.SplitHostPort(cur); h != "127.0.0.1" {
			t.Fatalf("agent's current address for the gateway = %q, want 127.0.0.1:PORT", cur)
		}
	})

	t.Run("CapabilityAllowsListedTools", func(t *testing.T) {
		if got := toolNames(t, ctx, cs); !sameSet(got, []string{"echo", "query"}) {
			t.Fatalf("tools/list = %v, want [echo query]", got)
		}
		if err := callErr(ctx, cs, "echo"); err != nil {
			t.Fatalf("echo: %v", err)
		}
		if err := callErr(ctx, cs, "drop_table"); err == nil {
			t.Fatal("drop_table ran; the capability does not grant it")
		}
		if up.Calls.Count("tool:drop_table") != 0 {
			t.Fatal("drop_table reached the upstream")
		}
		ev, err := rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "drop_table" })
		if err != nil {
			t.Fatal(err)
		}
		if ev.Decision != audit.Deny || !strings.HasPrefix(ev.Src, "tailnet:agent-1."+magicDNS) {
			t.Fatalf("audit event = decision %v src %q, want deny from tailnet:agent-1", ev.Decision, ev.Src)
		}
	})

	t.Run("CapabilityChangeReachesOpenSession", func(t *testing.T) {
		tn.SetCaps(`{"tools": ["echo"]}`)
		select {
		case <-listChanged:
		case <-ctx.Done():
			t.Fatal("no tools/list_changed after the capability changed")
		}
		if err := callErr(ctx, cs, "query"); err == nil {
			t.Fatal("query ran after the capability withdrew it")
		}
		if got := toolNames(t, ctx, cs); !sameSet(got, []string{"echo"}) {
			t.Fatalf("tools/list = %v, want [echo]", got)
		}
	})

	t.Run("BadCapabilityRefusesCaller", func(t *testing.T) {
		tn.SetCaps(`{"tools": ["echo"], "Tools": ["drop_table"]}`)
		// The re-check that sees the change closes the caller's
		// connections, and audits that; every request after it is refused.
		ev, err := rec.WaitFor(ctx, func(e audit.Event) bool {
			return e.Kind == audit.KindConnection && e.Outcome == "closed" && e.Reason == reason.BadCapability
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ev.Src, "tailnet:agent-1.") {
			t.Fatalf("closed connection's src = %q, want tailnet:agent-1", ev.Src)
		}
		if err := callErr(ctx, cs, "echo"); err == nil {
			t.Fatal("echo ran under an undecodable capability")
		}
		// A new connection is refused with the reason, before any MCP.
		status, body := post(t, ctx, agent, "tools", "80",
			`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`)
		if status != http.StatusForbidden || !strings.Contains(body, `"reason":"`+string(reason.BadCapability)+`"`) {
			t.Fatalf("new request: %d %s, want 403 with reason %s", status, body, reason.BadCapability)
		}
		if up.Calls.Count("tool:echo") != 1 {
			t.Fatalf("upstream saw %d echo calls, want only the one allowed earlier", up.Calls.Count("tool:echo"))
		}
		ev, err = rec.WaitFor(ctx, func(e audit.Event) bool {
			return e.Outcome == "refused" && e.Reason == reason.BadCapability
		})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Decision != audit.Deny || !strings.HasPrefix(ev.Src, "tailnet:agent-1.") {
			t.Fatalf("audit event = decision %v src %q, want deny from tailnet:agent-1", ev.Decision, ev.Src)
		}
		tn.SetCaps(`{"tools": ["echo"]}`)
		awaitCaps(t, ctx, rechecked, gwNode, agent, `{"tools": ["echo"]}`)
	})

	t.Run("AgentmeshPolicyMatchesTagsAndUsers", func(t *testing.T) {
		byTag := connect(t, ctx, agent, "tools", "81", nil)
		if got := toolNames(t, ctx, byTag); !sameSet(got, []string{"query"}) {
			t.Fatalf("tagged agent sees %v, want [query]", got)
		}
		byUser := connect(t, ctx, human, "tools", "81", nil)
		if got := toolNames(t, ctx, byUser); !sameSet(got, []string{"echo"}) {
			t.Fatalf("user %s sees %v, want [echo]", login, got)
		}
		if err := callErr(ctx, byUser, "query"); err == nil {
			t.Fatal("query ran for a user the policy grants only echo")
		}
		// The person is in the event's user field, as for a mesh node's owner.
		ev, err := rec.WaitFor(ctx, func(e audit.Event) bool { return e.Tool == "query" && e.Decision == audit.Deny && e.User != "" })
		if err != nil || ev.User != identity.LowerLogin(login) || !strings.HasSuffix(ev.Src, "/"+ev.User) {
			t.Fatalf("the user's denied query: event %+v, %v; want user %s", ev, err, identity.LowerLogin(login))
		}
	})

	t.Run("NoCapabilityRefusesCaller", func(t *testing.T) {
		open := connect(t, ctx, agent, "tools", "80", nil)
		if got := toolNames(t, ctx, open); !sameSet(got, []string{"echo"}) {
			t.Fatalf("tools/list = %v, want [echo]", got)
		}
		tn.SetCaps()
		ev, err := rec.WaitFor(ctx, func(e audit.Event) bool {
			return e.Kind == audit.KindConnection && e.Outcome == "closed" && e.Reason == reason.NoCapability
		})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Decision != audit.Deny || !strings.HasPrefix(ev.Src, "tailnet:agent-1.") {
			t.Fatalf("audit event = decision %v src %q, want deny from tailnet:agent-1", ev.Decision, ev.Src)
		}
		status, body := post(t, ctx, agent, "tools", "80", `{"jsonrpc":"2.0","id":1,"method":"ping"}`)
		if status != http.StatusForbidden || !strings.Contains(body, `"reason":"`+string(reason.NoCapability)+`"`) {
			t.Fatalf("request without a capability: %d %s, want 403 with reason %s", status, body, reason.NoCapability)
		}
	})
}

// awaitCaps waits until the gateway node's WhoIs of agent carries exactly
// the CapabilityMCP value want, checking after each of the gateway's
// re-checks (which follow netmap changes and its poll interval).
func awaitCaps(tb testing.TB, ctx context.Context, rechecked <-chan struct{}, gwNode, agent *tailnet.Node, want string) {
	tb.Helper()
	ast, err := agent.Status(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	addr := ast.TailscaleIPs[0].String()
	for {
		select {
		case <-rechecked:
		case <-ctx.Done():
			tb.Fatalf("the gateway never saw capability %s", want)
		}
		who, err := gwNode.WhoIs(ctx, addr)
		if err != nil {
			tb.Fatal(err)
		}
		got := who.CapMap[tailnet.CapabilityMCP]
		if len(got) == 1 && compactJSON(tb, string(got[0])) == compactJSON(tb, want) {
			return
		}
	}
}

func compactJSON(tb testing.TB, s string) string {
	tb.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		tb.Fatal(err)
	}
	return b.String()
}
