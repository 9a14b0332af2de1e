package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"agentmesh/examples"
	"agentmesh/internal/controlapi"
	"agentmesh/internal/engine"
	"agentmesh/internal/reason"
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

// rpcReason posts an initialize to the local endpoint ep and returns the
// JSON-RPC error's code and data.reason of the answer.
func rpcReason(t *testing.T, ctx context.Context, ep Endpoint) (int, reason.Code) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ep.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var msg struct {
		Error *struct {
			Code int `json:"code"`
			Data struct {
				Reason reason.Code `json:"reason"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &msg); err != nil || msg.Error == nil {
		t.Fatalf("answer %d %s: want a JSON-RPC error", resp.StatusCode, b)
	}
	return msg.Error.Code, msg.Error.Data.Reason
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
