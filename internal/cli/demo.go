package cli

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

	"agentmesh/examples"
	"agentmesh/internal/audit"
	"agentmesh/internal/connector"
	"agentmesh/internal/controlapi"
	"agentmesh/internal/controlclient"
	"agentmesh/internal/coordinator"
	"agentmesh/internal/gateway"
	"agentmesh/internal/httpserver"
	"agentmesh/internal/ledger"
	"agentmesh/internal/loopback"
	"agentmesh/internal/nodestate"
)

func init() {
	register(&command{
		name:  "demo",
		usage: "[--keep] [--dir DIR]",
		short: "run a whole mesh on loopback and show what agentmesh does",
		long: `Starts, in a temporary directory on free loopback ports, a coordinator, the example ledger MCP
server behind a gateway, and two agents (teller and auditor) with their connectors; applies
examples/policy.hujson; then shows an allowed call, a denied call with its reason, one tools/list
seen two ways, a live policy change with the list_changed notification it causes, a revocation
that cuts an agent off mid-session, and the audit trail with its verification.

With --keep it leaves everything running and prints how to point a real MCP client at it.

Examples:
  agentmesh demo
  go run ./cmd/agentmesh demo --keep`,
		run: runDemo,
	})
}

type demo struct {
	env   Env
	w     io.Writer
	dir   string
	log   *slog.Logger
	co    *coordinator.Coordinator
	admin *controlclient.Client
	wg    sync.WaitGroup
	stops []func()
	step  int
}

func (d *demo) say(format string, a ...any) { printf(d.w, format+"\n", a...) }

func (d *demo) section(title string) {
	d.step++
	fmt.Fprintf(d.w, "\n%d. %s\n", d.step, title)
}

func runDemo(ctx context.Context, env Env, args []string) error {
	c := commands["demo"]
	fs := newFlags(c, env)
	keep := fs.Bool("keep", false, "leave the mesh running until interrupted")
	dirFlag := fs.String("dir", "", "work in `DIR` instead of a temporary directory")
	verbose := fs.Bool("v", false, "log the components' work to stderr")
	if _, _, err := parse(fs, args); err != nil {
		return err
	}
	dir := *dirFlag
	if dir == "" {
		tmp, err := os.MkdirTemp("", "agentmesh-demo-")
		if err != nil {
			return err
		}
		dir = tmp
		if !*keep {
			defer os.RemoveAll(tmp)
		}
	}
	logOut := io.Discard
	if *verbose {
		logOut = env.Stderr
	}
	d := &demo{env: env, w: env.Stdout, dir: dir, log: slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		for i := len(d.stops) - 1; i >= 0; i-- {
			d.stops[i]()
		}
		d.wg.Wait()
	}()
	if err := d.run(ctx, *keep); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if *keep {
		<-ctx.Done()
	}
	return nil
}

func (d *demo) run(ctx context.Context, keep bool) error {
	d.say("agentmesh demo: a zero-trust mesh for AI agents, running on loopback in %s", d.dir)

	d.section("Control plane")
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(d.dir, "coordinator"), Listen: "127.0.0.1:0",
		TrustDomain: "demo.agentmesh", Logger: d.log, CheckpointEvery: time.Second})
	if err != nil {
		return err
	}
	d.co = co
	d.stops = append(d.stops, func() { co.Close() })
	if d.admin, err = d.client(co.AdminDir()); err != nil {
		return err
	}
	d.say("   coordinator   %s   CA sha256:%s…", co.URL(), co.CAFingerprint()[:16])

	d.section("Nodes join with single-use auth keys (keys carry the pinned CA fingerprint)")
	for _, n := range []struct{ name, kind, tags string }{
		{"ledger", "tool", "tag:finance"},
		{"teller", "agent", "tag:tellers"},
		{"auditor", "agent", "tag:auditors"},
	} {
		var resp controlapi.KeyCreateResponse
		if err := d.admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: n.kind, Tags: strings.Split(n.tags, ",")}, &resp); err != nil {
			return err
		}
		id, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: resp.Key, Name: n.name, State: filepath.Join(d.dir, n.name)})
		if err != nil {
			return err
		}
		d.say("   %-40s tags %s", id, n.tags)
	}

	d.section("Policy: examples/policy.hujson (HuJSON grants, CEL conditions, tests that run on apply)")
	v, err := d.applyPolicy(ctx, string(examples.Policy))
	if err != nil {
		return err
	}
	d.say("   applied as version %d", v)

	d.section("The ledger MCP server gets a gateway")
	upstream, err := d.startLedger()
	if err != nil {
		return err
	}
	gwAddr, err := d.startGateway(ctx, upstream)
	if err != nil {
		return err
	}
	d.say("   upstream (plain MCP server, knows nothing of agentmesh)  %s", upstream)
	d.say("   gateway (mTLS, policy per message, audit)               https://%s/mcp", gwAddr)

	d.section("Agents connect through local connectors (loopback HTTP in, mTLS out)")
	listChanged := make(chan struct{}, 4)
	teller, tellerEP, err := d.agent(ctx, "teller", nil)
	if err != nil {
		return err
	}
	auditor, auditorEP, err := d.agent(ctx, "auditor", listChanged)
	if err != nil {
		return err
	}
	d.say("   teller   -> %s (bearer token required)", tellerEP.url)
	d.say("   auditor  -> %s (bearer token required)", auditorEP.url)

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
	if v, err = d.applyPolicy(ctx, changed); err != nil {
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
	if err := d.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/teller/revoke", nil, nil); err != nil {
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
		d.say("   the gateway closed teller's session and connection; its next call fails: %.90s…", firstLine(lastErr.Error()))
	}

	d.section("The audit trail: every decision, hash-chained, checkpoints signed")
	if err := d.showAudit(ctx); err != nil {
		return err
	}
	if keep {
		d.say("\nThe mesh keeps running (Ctrl-C to stop). Point an MCP client at the auditor's connector;")
		d.say("it admits only requests with its token, so that no other local user can act as the auditor:")
		d.say("   {\"mcpServers\": {\"ledger\": {\"url\": %q, \"headers\": {\"Authorization\": \"Bearer %s\"}}}}", auditorEP.url, auditorEP.token)
		d.say("or run a stdio connector as an MCP server command:")
		self, _ := os.Executable()
		d.say("   %s connect ledger --state %s", self, filepath.Join(d.dir, "auditor"))
		d.say("admin commands: export AGENTMESH_STATE=%s; %s nodes list", co.AdminDir(), self)
		return nil
	}
	d.say("\nDone; everything is stopped and removed. Run 'agentmesh demo --keep' to explore with your own MCP client.")
	return nil
}

func (d *demo) client(dir string) (*controlclient.Client, error) {
	sd, err := nodestate.Open(dir)
	if err != nil {
		return nil, err
	}
	cl, err := controlclient.New(sd, controlclient.Options{Logger: d.log})
	if err != nil {
		return nil, err
	}
	d.stops = append(d.stops, cl.Close)
	return cl, nil
}

func (d *demo) applyPolicy(ctx context.Context, doc string) (int64, error) {
	var pv controlapi.PolicyVersion
	err := d.admin.Call(ctx, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv)
	return pv.Version, err
}

// startLedger serves the example ledger over Streamable HTTP on loopback.
func (d *demo) startLedger() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := ledger.NewServer(ledger.NewBook())
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := context.WithCancel(context.Background())
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		httpserver.Run(ctx, hs, ln)
	}()
	d.stops = append(d.stops, stop)
	return "http://" + ln.Addr().String() + "/mcp", nil
}

func (d *demo) startGateway(ctx context.Context, upstream string) (string, error) {
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	gctx, cancel := context.WithCancel(ctx)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		errc <- serve(gctx, Env{Stdout: io.Discard, Stderr: io.Discard, Getenv: d.env.Getenv}, serveConfig{
			state: filepath.Join(d.dir, "ledger"), listen: "127.0.0.1:0", upstream: gateway.HTTPUpstream{URL: upstream},
			log: d.log, ready: func(a string) { ready <- a }})
	}()
	d.stops = append(d.stops, cancel)
	select {
	case a := <-ready:
		// Wait until the coordinator has the address, so connectors find it.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if n, ok := d.co.Netmap().Node("ledger"); ok && slices.Contains(n.Addrs, a) {
				return a, nil
			}
		}
		return "", errors.New("the gateway's address did not reach the coordinator")
	case err := <-errc:
		return "", fmt.Errorf("gateway: %w", err)
	}
}

// agent starts the agent's connector on loopback, with a bearer token as
// `agentmesh connect --listen` has, and an MCP SDK client session through
// it that sends the token.
func (d *demo) agent(ctx context.Context, name string, listChanged chan<- struct{}) (*mcp.ClientSession, localEndpoint, error) {
	ln, err := connector.Listen("127.0.0.1:0")
	if err != nil {
		return nil, localEndpoint{}, err
	}
	token, err := loopback.NewToken()
	if err != nil {
		ln.Close()
		return nil, localEndpoint{}, err
	}
	ep := localEndpoint{url: "http://" + ln.Addr().String() + "/mcp", token: token}
	cctx, cancel := context.WithCancel(ctx)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := connectService(cctx, d.env, filepath.Join(d.dir, name), "ledger", ln, loopback.Auth{Token: token}, d.log); err != nil {
			d.log.Error("demo: connector", "agent", name, "err", err)
		}
	}()
	d.stops = append(d.stops, cancel)
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
	d.stops = append(d.stops, tr.CloseIdleConnections)
	hc := &http.Client{Transport: loopback.WithToken(tr, token)}
	s, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: ep.url, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		return nil, localEndpoint{}, fmt.Errorf("%s: connect: %w", name, err)
	}
	d.stops = append(d.stops, func() { s.Close() })
	return s, ep, nil
}

// localEndpoint is a connector's local MCP endpoint and its bearer token.
type localEndpoint struct{ url, token string }

func (d *demo) showAudit(ctx context.Context) error {
	// Gateways ship their spools in batches; wait until the denial is in.
	var events []audit.Event
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		events = events[:0]
		body, err := d.admin.Stream(ctx, controlapi.PathAudit+"?order=asc")
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
		printf(tw, "   %s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("15:04:05.000"), string(e.Kind), shortID(e.Src), what, e.Decision, e.Reason)
	}
	tw.Flush()
	var rep audit.Report
	if err := d.admin.Call(ctx, http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil {
		return err
	}
	io.WriteString(d.w, "   verify: ")
	printLines(d.w, "   ", rep.Lines())
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

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
