package demo

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/examples"
	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// startMesh runs the demo's mesh (coordinator, the ledger behind its
// gateway, teller and auditor joined, the example policy applied) without
// its story.
func startMesh(t *testing.T) (*Mesh, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	m := &Mesh{Dir: t.TempDir()}
	t.Cleanup(func() {
		cancel()
		m.Close()
	})
	if err := m.StartCoordinator(ctx, engineCoordinatorConfig()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ name, kind string }{{"ledger", "tool"}, {"teller", "agent"}, {"auditor", "agent"}} {
		if _, err := m.Join(ctx, n.name, n.kind); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.ApplyPolicy(ctx, string(examples.Policy)); err != nil {
		t.Fatal(err)
	}
	up, err := m.StartLedger()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.StartGateway(ctx, up); err != nil {
		t.Fatal(err)
	}
	return m, ctx
}

// rpcReason is Refusal's code and reason, which must be there.
func rpcReason(t *testing.T, ctx context.Context, ep Endpoint) (int, reason.Code) {
	t.Helper()
	code, why, err := Refusal(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	return code, reason.Code(why)
}

// TestGatewayRefusesARevokedAgentAsRevoked: once the coordinator revokes
// an agent, the gateway refuses its still-valid certificate with the
// reason revoked (not unknown_peer), and the agent's MCP client reads it
// through its connector.
func TestGatewayRefusesARevokedAgentAsRevoked(t *testing.T) {
	m, ctx := startMesh(t)
	teller, ep, err := m.Agent(ctx, "teller", nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func() error {
		_, err := teller.CallTool(ctx, &mcp.CallToolParams{Name: "balance", Arguments: map[string]any{"account": "alice"}})
		return err
	}
	if err := call(); err != nil {
		t.Fatal(err)
	}
	if err := m.Admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/teller/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The gateway closes the revoked agent's session once its new view is
	// in force; every call until then is an answer from the upstream.
	for call() == nil {
		if ctx.Err() != nil {
			t.Fatal("the revoked agent's calls still succeed")
		}
	}
	if code, why := rpcReason(t, ctx, ep); why != reason.Revoked {
		t.Fatalf("a new session of the revoked agent: code %d, reason %q, want %q", code, why, reason.Revoked)
	}
}

func engineCoordinatorConfig() engine.CoordinatorConfig {
	return engine.CoordinatorConfig{TrustDomain: "test.agentmesh"}
}

// connect starts agent's connector to service on loopback with its
// warnings going to log, and returns its endpoint once it serves.
func connect(t *testing.T, ctx context.Context, m *Mesh, agent, service string, log *gatewaytest.Log) Endpoint {
	t.Helper()
	ready := make(chan engine.Serving, 1)
	errc := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		errc <- engine.Connect(cctx, engine.ConnectConfig{State: filepath.Join(m.Dir, agent), Service: service, Listen: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(log, nil)), Ready: func(s engine.Serving) { ready <- s }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("connect %s: %v", service, err)
		}
	})
	select {
	case s := <-ready:
		token, err := os.ReadFile(s.TokenFile)
		if err != nil {
			t.Fatal(err)
		}
		return Endpoint{URL: s.URL, Token: strings.TrimSpace(string(token))}
	case err := <-errc:
		errc <- err
		t.Fatalf("connect %s: %v", service, err)
	}
	return Endpoint{}
}

// TestConnectTellsTheClientAndTheTerminalWhyAServiceCannotBeReached: a
// typo in the service name, a service that has joined but is not serving,
// and a revoked agent each reach the MCP client as a JSON-RPC error with
// its own reason, and connect warns about each at start.
func TestConnectTellsTheClientAndTheTerminalWhyAServiceCannotBeReached(t *testing.T) {
	m, ctx := startMesh(t)
	if _, err := m.Join(ctx, "files", "tool"); err != nil {
		t.Fatal(err)
	}
	withFiles := strings.Replace(string(examples.Policy), `"grants": [`, `"grants": [
    { "src": ["agent:teller"], "dst": ["tool:files"], "tools": ["*"] },`, 1)
	if _, err := m.ApplyPolicy(ctx, withFiles); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, service, warning string
		want                   reason.Code
	}{
		{"a typo", "ledgr", `no service named \"ledgr\"`, reason.UnknownService},
		{"not serving", "files", `\"files\" has joined the mesh but is not serving`, reason.NotServing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log gatewaytest.Log
			ep := connect(t, ctx, m, "teller", tc.service, &log)
			if !strings.Contains(log.String(), tc.warning) {
				t.Errorf("connect warned %q, want %q", log.String(), tc.warning)
			}
			if code, why := rpcReason(t, ctx, ep); code != connector.CodeGatewayUnreachable || why != tc.want {
				t.Errorf("the client got code %d, reason %q; want %d, %q", code, why, connector.CodeGatewayUnreachable, tc.want)
			}
		})
	}
	t.Run("a revoked agent", func(t *testing.T) {
		if err := m.Admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/auditor/revoke", nil, nil); err != nil {
			t.Fatal(err)
		}
		var log gatewaytest.Log
		ep := connect(t, ctx, m, "auditor", "ledger", &log)
		if !strings.Contains(log.String(), "this agent has been revoked") {
			t.Errorf("connect warned %q, want that this agent has been revoked", log.String())
		}
		// The coordinator told connect at start: it dials no gateway (whose
		// address in its stale netmap may be gone) and says why.
		if code, why := rpcReason(t, ctx, ep); code != connector.CodeGatewayUnreachable || why != reason.Revoked {
			t.Fatalf("the revoked agent's client got code %d, reason %q; want %d, %q", code, why, connector.CodeGatewayUnreachable, reason.Revoked)
		}
	})
}

// TestDemoTellsTheRevocationInTheMeshsWordsNotTheSDKs: the demo's story
// shows the reason a revoked agent is refused with, and no raw error of
// the MCP SDK.
func TestDemoTellsTheRevocationInTheMeshsWordsNotTheSDKs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo (-short)")
	}
	var out gatewaytest.Log
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Run(ctx, Config{Out: &out, Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	story := out.String()
	for _, raw := range []string{"standalone SSE stream", "retries", "calling \"", "Bad Gateway"} {
		if strings.Contains(story, raw) {
			t.Errorf("the demo shows the SDK's %q:\n%s", raw, story)
		}
	}
	// From the gateway (-32040), or from the connector once the
	// coordinator has told it (-32051): whichever learns first.
	if !strings.Contains(story, "a new session is refused: JSON-RPC error -32040, reason revoked") &&
		!strings.Contains(story, "a new session is refused: JSON-RPC error -32051, reason revoked") {
		t.Errorf("the demo does not show the revoked agent refused as revoked:\n%s", story)
	}
}
