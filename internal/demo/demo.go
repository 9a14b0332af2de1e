// Package demo runs a whole agentmesh mesh on loopback and tells, step by
// step, what it does: the story of 'agentmesh demo'. Its Mesh, which the
// story runs on, is also the fixture of tests that need a real mesh in one
// process (coordinator, gateway and connectors from package engine, the
// example ledger as the upstream).
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/examples"
	"github.com/agentmesh/agentmesh/examples/ledger"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/termtext"
)

// Mesh is a whole mesh on loopback, in one directory: a coordinator,
// nodes joined to it, the example ledger behind a gateway, agents with
// their connectors. The demo tells its story with one; tests use one as a
// fixture. Its zero value with Dir set is ready; Close stops everything.
type Mesh struct {
	// Dir holds every node's state directory and the coordinator's data.
	Dir string
	// Log receives the components' logs; nil discards them.
	Log *slog.Logger
	// Coordinator and Admin (a client with the admin identity) are set by
	// StartCoordinator.
	Coordinator *engine.Coordinator
	Admin       *controlclient.Client

	wg    sync.WaitGroup
	stops []func()
}

// Close stops everything the mesh started, newest first, and waits for it.
func (m *Mesh) Close() {
	for i := len(m.stops) - 1; i >= 0; i-- {
		m.stops[i]()
	}
	m.stops = nil
	m.wg.Wait()
}

// OnClose adds f to what Close runs (before what was started earlier).
func (m *Mesh) OnClose(f func()) { m.stops = append(m.stops, f) }

// log returns the mesh's logger.
func (m *Mesh) log() *slog.Logger {
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
	return m.Log
}

// demo is the story told over a Mesh.
type demo struct {
	*Mesh
	w    io.Writer
	step int
}

func (d *demo) say(format string, a ...any) { termtext.Printf(d.w, format+"\n", a...) }

func (d *demo) section(title string) {
	d.step++
	fmt.Fprintf(d.w, "\n%d. %s\n", d.step, title)
}

// Config configures Run.
type Config struct {
	// Out receives the story.
	Out io.Writer
	// Dir is where the mesh lives; "" is a new temporary directory,
	// removed at the end unless Keep.
	Dir string
	// Keep leaves the mesh running until ctx ends, and says how to use it.
	Keep bool
	// Log receives the components' logs; nil discards them.
	Log *slog.Logger
}

// Run starts a whole mesh on loopback and shows what agentmesh does: an
// allowed call, a denied call with its reason, one tools/list seen two
// ways, a live policy change, a revocation, and the audit trail with its
// verification. Everything it started is stopped when it returns.
func Run(ctx context.Context, cfg Config) error {
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "agentmesh-demo-")
		if err != nil {
			return err
		}
		dir = tmp
		if !cfg.Keep {
			defer os.RemoveAll(tmp)
		}
	}
	d := &demo{Mesh: &Mesh{Dir: dir, Log: cfg.Log}, w: cfg.Out}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		d.Close()
	}()
	if err := d.run(ctx, cfg.Keep); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if cfg.Keep {
		<-ctx.Done()
	}
	return nil
}

func (d *demo) run(ctx context.Context, keep bool) error {
	d.say("agentmesh demo: a zero-trust mesh for AI agents, running on loopback in %s", d.Dir)

	d.section("Control plane")
	if err := d.StartCoordinator(ctx, engine.CoordinatorConfig{TrustDomain: "demo.agentmesh", CheckpointEvery: time.Second}); err != nil {
		return err
	}
	co := d.Coordinator
	d.say("   coordinator   %s   CA sha256:%s…", co.URL(), co.CAFingerprint()[:16])

	d.section("Nodes join with single-use auth keys (keys carry the pinned CA fingerprint)")
	for _, n := range []struct{ name, kind, tags string }{
		{"ledger", "tool", "tag:finance"},
		{"teller", "agent", "tag:tellers"},
		{"auditor", "agent", "tag:auditors"},
	} {
		id, err := d.Join(ctx, n.name, n.kind, strings.Split(n.tags, ",")...)
		if err != nil {
			return err
		}
		d.say("   %-40s tags %s", id, n.tags)
	}

	d.section("Policy: examples/policy.hujson (HuJSON grants, CEL conditions, tests that run on apply)")
	v, err := d.ApplyPolicy(ctx, string(examples.Policy))
	if err != nil {
		return err
	}
	d.say("   applied as version %d", v)

	d.section("The ledger MCP server gets a gateway")
	upstream, err := d.StartLedger()
	if err != nil {
		return err
	}
	gwAddr, err := d.StartGateway(ctx, upstream)
	if err != nil {
		return err
	}
	d.say("   upstream (plain MCP server, knows nothing of agentmesh)  %s", upstream)
	d.say("   gateway (mTLS, policy per message, audit)               https://%s/mcp", gwAddr)
	d.say("   (the ledger speaks HTTP, so sessions start at once; a stdio server, `serve -- npx ...`,")
	d.say("   is started once per session, which takes seconds: serve logs each start and when it is ready,")
	d.say("   and connect says when a request has waited more than a second)")

	d.section("Agents connect through local connectors (loopback HTTP in, mTLS out)")
	listChanged := make(chan struct{}, 4)
	teller, tellerEP, err := d.Agent(ctx, "teller", nil)
	if err != nil {
		return err
	}
	auditor, auditorEP, err := d.Agent(ctx, "auditor", listChanged)
	if err != nil {
		return err
	}
	d.say("   teller   -> %s (bearer token required)", tellerEP.URL)
	d.say("   auditor  -> %s (bearer token required)", auditorEP.URL)

	d.section("One server, two views: tools/list is filtered per identity")
	for _, a := range []struct {
		name string
		s    *mcp.ClientSession
	}{{"teller", teller}, {"auditor", auditor}} {
		names, err := toolNames(ctx, a.s)
		if err != nil {
			return err
		}
		d.say("   %-8s sees: %s", a.name, strings.Join(names, ", "))
	}

	d.section("An allowed call")
	res, err := teller.CallTool(ctx, &mcp.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "alice", "to": "bob", "amount": 250, "memo": "invoice 42"}})
	if err != nil {
		return err
	}
	d.say("   teller: transfer 250 alice -> bob   => %s", resultText(res))

	d.section("A denied call, answered by the gateway and never forwarded")
	_, err = auditor.CallTool(ctx, &mcp.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "carol", "to": "auditor", "amount": 1000}})
	d.say("   auditor: transfer 1000 carol -> auditor   => %s", denial(err))

	d.section("A live policy change reaches the open session")
	changed := strings.Replace(string(examples.Policy), `"grants": [`, `"grants": [
    // Added live by the demo: auditors may also list accounts.
    { "src": ["agent:auditor"], "dst": ["tool:ledger"], "tools": ["list_accounts"] },`, 1)
	start := time.Now()
	if v, err = d.ApplyPolicy(ctx, changed); err != nil {
		return err
	}
	d.say("   applied version %d: auditors may also call list_accounts", v)
	select {
	case <-listChanged:
		d.say("   auditor received notifications/tools/list_changed %v after the apply", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		d.say("   auditor received no list_changed notification within 5s (unexpected)")
	}
	names, err := toolNames(ctx, auditor)
	if err != nil {
		return err
	}
	d.say("   auditor now sees: %s", strings.Join(names, ", "))

	d.section("Revocation cuts an agent off mid-session")
	if err := d.Admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/teller/revoke", nil, nil); err != nil {
		return err
	}
	d.say("   admin revoked agent:teller")
	var lastErr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, lastErr = teller.CallTool(ctx, &mcp.CallToolParams{Name: "balance", Arguments: map[string]any{"account": "alice"}}); lastErr != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastErr == nil {
		d.say("   teller's calls still succeed (unexpected)")
	} else {
		d.say("   the gateway closed teller's session and connection; its next call fails (%s)", callFailure(lastErr))
		if code, why, err := Refusal(ctx, tellerEP); err == nil {
			d.say("   a new session is refused: JSON-RPC error %d, reason %s", code, why)
		}
	}

	d.section("The audit trail: every decision, hash-chained, checkpoints signed")
	if err := d.showAudit(ctx); err != nil {
		return err
	}
	if keep {
		d.say("\nThe mesh keeps running (Ctrl-C to stop). Point an MCP client at the auditor's connector;")
		d.say("it admits only requests with its token, so that no other local user can act as the auditor:")
		d.say("   {\"mcpServers\": {\"ledger\": {\"url\": %q, \"headers\": {\"Authorization\": \"Bearer %s\"}}}}", auditorEP.URL, auditorEP.Token)
		d.say("or run a stdio connector as an MCP server command:")
		self, _ := os.Executable()
		d.say("   %s connect ledger --state %s", self, filepath.Join(d.Dir, "auditor"))
		d.say("admin commands: export AGENTMESH_STATE=%s; %s nodes list", co.AdminDir(), self)
		return nil
	}
	d.say("\nDone; everything is stopped and removed. Run 'agentmesh demo --keep' to explore with your own MCP client.")
	return nil
}

// StartCoordinator starts the mesh's coordinator with cfg (its data
// directory and a loopback listener are the mesh's) and an admin client.
func (m *Mesh) StartCoordinator(ctx context.Context, cfg engine.CoordinatorConfig) error {
	cfg.DataDir = filepath.Join(m.Dir, "coordinator")
	cfg.Listen = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = m.log()
	}
	co, err := engine.StartCoordinator(ctx, cfg)
	if err != nil {
		return err
	}
	m.Coordinator = co
	m.OnClose(func() { co.Close() })
	m.Admin, err = m.Client(co.AdminDir())
	return err
}

// Client returns a control client with the identity in the state
// directory dir.
func (m *Mesh) Client(dir string) (*controlclient.Client, error) {
	sd, err := nodestate.Open(dir)
	if err != nil {
		return nil, err
	}
	cl, err := controlclient.New(sd, controlclient.Options{Logger: m.log()})
	if err != nil {
		return nil, err
	}
	m.OnClose(func() { cl.Close() })
	return cl, nil
}

// Join creates an auth key of kind with tags and joins the node name with
// it, in the state directory Dir/name.
func (m *Mesh) Join(ctx context.Context, name, kind string, tags ...string) (identity.ID, error) {
	var resp controlapi.KeyCreateResponse
	if err := m.Admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: kind, Tags: tags}, &resp); err != nil {
		return identity.ID{}, err
	}
	return controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: resp.Key, Name: name, State: filepath.Join(m.Dir, name)})
}

// ApplyPolicy applies doc and returns its version.
func (m *Mesh) ApplyPolicy(ctx context.Context, doc string) (int64, error) {
	var pv controlapi.PolicyVersion
	err := m.Admin.Call(ctx, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv)
	return pv.Version, err
}

// StartLedger serves the example ledger over Streamable HTTP on loopback
// and returns its URL.
func (m *Mesh) StartLedger() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := ledger.NewServer(ledger.NewBook())
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := context.WithCancel(context.Background())
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		httpserver.Run(ctx, hs, ln)
	}()
	m.OnClose(stop)
	return "http://" + ln.Addr().String() + "/mcp", nil
}

// StartGateway serves the tool node "ledger" in front of upstream and
// returns its address once it serves.
func (m *Mesh) StartGateway(ctx context.Context, upstream string) (string, error) {
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	gctx, cancel := context.WithCancel(ctx)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		errc <- engine.ServeGateway(gctx, engine.GatewayConfig{State: filepath.Join(m.Dir, "ledger"), Listen: "127.0.0.1:0",
			UpstreamURL: upstream, Logger: m.log(), Ready: func(s engine.Serving) { ready <- s.Addr }})
	}()
	m.OnClose(cancel)
	var a string
	select {
	case a = <-ready:
	case err := <-errc:
		return "", fmt.Errorf("gateway: %w", err)
	}
	// The gateway registers its address in the background; a connector
	// started now waits for it to appear in its netmap (engine.Connect).
	return a, nil
}

// Endpoint is a connector's local MCP endpoint and its bearer token.
type Endpoint struct{ URL, Token string }

// Agent starts the agent name's connector to the ledger on loopback, as
// 'agentmesh connect ledger --listen 127.0.0.1:0' does (with a bearer
// token in its state directory), and an MCP SDK client session through it
// that sends the token. listChanged, when set, receives the session's
// tools/list_changed notifications.
func (m *Mesh) Agent(ctx context.Context, name string, listChanged chan<- struct{}) (*mcp.ClientSession, Endpoint, error) {
	ready := make(chan engine.Serving, 1)
	errc := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		errc <- engine.Connect(cctx, engine.ConnectConfig{State: filepath.Join(m.Dir, name), Service: "ledger", Listen: "127.0.0.1:0",
			Logger: m.log(), Ready: func(s engine.Serving) { ready <- s }})
	}()
	m.OnClose(cancel)
	var ep Endpoint
	select {
	case s := <-ready:
		token, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return nil, Endpoint{}, err
		}
		ep = Endpoint{URL: s.URL, Token: strings.TrimSpace(string(token))}
	case err := <-errc:
		return nil, Endpoint{}, fmt.Errorf("%s: connector: %w", name, err)
	}
	opts := &mcp.ClientOptions{}
	if listChanged != nil {
		opts.ToolListChangedHandler = func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		}
	}
	cl := mcp.NewClient(&mcp.Implementation{Name: name, Version: "demo"}, opts)
	tr := &http.Transport{}
	m.OnClose(tr.CloseIdleConnections)
	hc := &http.Client{Transport: loopback.WithToken(tr, ep.Token)}
	s, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: ep.URL, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return nil, Endpoint{}, fmt.Errorf("%s: connect: %w", name, err)
	}
	m.OnClose(func() { s.Close() })
	return s, ep, nil
}

func (d *demo) showAudit(ctx context.Context) error {
	// Gateways ship their spools in batches; wait until the denial is in.
	var events []audit.Event
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		events = events[:0]
		body, err := d.Admin.Stream(ctx, controlapi.PathAudit+"?order=asc")
		if err != nil {
			return err
		}
		dec := json.NewDecoder(body)
		for {
			var e audit.Event
			if err := dec.Decode(&e); err != nil {
				break
			}
			events = append(events, e)
		}
		body.Close()
		if slices.ContainsFunc(events, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Decision == audit.Deny }) || time.Now().After(deadline) {
			break
		}
	}
	// The trail is in arrival order; gateways ship in batches, so show it
	// in the order things happened.
	slices.SortStableFunc(events, func(a, b audit.Event) int { return a.Time.Compare(b.Time) })
	tw := tabwriter.NewWriter(d.w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "   TIME\tKIND\tSRC\tWHAT\tDECISION\tREASON")
	for _, e := range events {
		if e.Kind == audit.KindRequest && e.Method != "tools/call" && e.Method != "tools/list" {
			continue
		}
		what := strings.TrimSpace(e.Method + " " + e.Tool + e.Action + " " + e.Target)
		termtext.Printf(tw, "   %s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("15:04:05.000"), string(e.Kind), identity.Short(e.Src), what, e.Decision, e.Reason)
	}
	tw.Flush()
	var rep audit.Report
	if err := d.Admin.Call(ctx, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil {
		return err
	}
	io.WriteString(d.w, "   verify: ")
	termtext.PrintLines(d.w, "   ", rep.Lines())
	return nil
}

func toolNames(ctx context.Context, s *mcp.ClientSession) ([]string, error) {
	res, err := s.ListTools(ctx, nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range res.Tools {
		out = append(out, t.Name)
	}
	slices.Sort(out)
	return out, nil
}

func resultText(res *mcp.CallToolResult) string {
	if res.IsError {
		return "tool error"
	}
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		return string(b)
	}
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			return t.Text
		}
	}
	return "ok"
}

// denial describes a JSON-RPC policy denial.
func denial(err error) string {
	var we *jsonrpc.Error
	if !errors.As(err, &we) {
		if err == nil {
			return "allowed (unexpected)"
		}
		return err.Error()
	}
	var data struct {
		Reason  string `json:"reason"`
		EventID string `json:"event_id"`
	}
	json.Unmarshal(we.Data, &data)
	return fmt.Sprintf("JSON-RPC error %d %q, reason %s, audit event %s", we.Code, we.Message, data.Reason, data.EventID)
}

// callFailure says in a few words why an MCP call failed: the JSON-RPC
// error's code and reason when there is one, never the SDK's own error
// text (such as "standalone SSE stream: exceeded 0 retries"), which tells
// a reader nothing about the mesh.
func callFailure(err error) string {
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		var data struct {
			Reason string `json:"reason"`
		}
		json.Unmarshal(we.Data, &data)
		return fmt.Sprintf("JSON-RPC error %d, reason %s", we.Code, termtext.Escape(data.Reason))
	}
	return "its session is gone"
}

// Refusal opens a new MCP session through the local endpoint ep with a
// bare initialize and returns the JSON-RPC error it is refused with: its
// code and data.reason. An answer that is not an error is an error.
func Refusal(ctx context.Context, ep Endpoint) (int, string, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: loopback.WithToken(tr, ep.Token)}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var msg struct {
		Error *struct {
			Code int `json:"code"`
			Data struct {
				Reason string `json:"reason"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &msg); err != nil || msg.Error == nil {
		return 0, "", fmt.Errorf("HTTP %d: not a JSON-RPC error", resp.StatusCode)
	}
	return msg.Error.Code, msg.Error.Data.Reason, nil
}
