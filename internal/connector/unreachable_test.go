package connector_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// rpcErr is a JSON-RPC error answer as the agent's client reads it.
type rpcErr struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Reason reason.Code `json:"reason"`
		} `json:"data"`
	} `json:"error"`
}

func decodeRPCErr(t *testing.T, s string) rpcErr {
	t.Helper()
	var e rpcErr
	if err := json.Unmarshal([]byte(s), &e); err != nil || e.Error.Code == 0 {
		t.Fatalf("answer %q: want a JSON-RPC error (%v)", s, err)
	}
	return e
}

// TestConnectorTellsTheClientWhyARequestReachedNoGateway: a request that
// never reached a gateway is answered, on the stdio and the HTTP
// endpoint alike, with CodeGatewayUnreachable, the reason (the one
// Resolve gave, else gateway_unreachable) as data.reason and a message
// that says what happened, never a bare "gateway unreachable".
func TestConnectorTellsTheClientWhyARequestReachedNoGateway(t *testing.T) {
	e := newEnv(t)
	notServing := &connector.ResolveError{Code: reason.NotServing, Err: errors.New(`"files" has joined the mesh but is not serving: start 'agentmesh serve' for it`)}
	for _, tc := range []struct {
		name    string
		resolve func(context.Context) (string, error)
		want    reason.Code
		message string
	}{
		{"Resolve says why", func(context.Context) (string, error) { return "", notServing }, reason.NotServing, notServing.Error()},
		{"the gateway is down", func(context.Context) (string, error) { return e.gw.URL(), nil }, reason.GatewayUnreachable, "gateway unreachable: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := connector.New(connector.Config{Resolve: tc.resolve, TLS: e.ca.ClientTLS(t, "spiffe://test.mesh/agent/a")})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.want == reason.GatewayUnreachable {
				e.gw.Close()
			}
			// HTTP endpoint.
			status, body := rawRequest(t, serveListener(t, c), http.MethodPost, "", mcpHeaders, initializeBody)
			got := decodeRPCErr(t, body)
			if status != http.StatusBadGateway || got.Error.Code != connector.CodeGatewayUnreachable || got.Error.Data.Reason != tc.want || !strings.Contains(got.Error.Message, tc.message) {
				t.Errorf("HTTP endpoint: %d %s, want 502, code %d, reason %s, message with %q", status, body, connector.CodeGatewayUnreachable, tc.want, tc.message)
			}
			// Stdio endpoint.
			line := stdioAnswer(t, c, initializeBody)
			got = decodeRPCErr(t, line)
			if got.Error.Code != connector.CodeGatewayUnreachable || got.Error.Data.Reason != tc.want || !strings.Contains(got.Error.Message, tc.message) {
				t.Errorf("stdio endpoint: %s, want code %d, reason %s, message with %q", line, connector.CodeGatewayUnreachable, tc.want, tc.message)
			}
		})
	}
}

// TestConnectorKeepsTheConnectionWhenTheGatewayIsDown: a request whose
// body the connector never sent on (the gateway was down) leaves the
// agent's keep-alive connection usable. With full duplex on, net/http
// drained such a body only after the handler returned, which started its
// background read after it had stopped it, and the server then panicked
// on the connection ("invalid concurrent Body.Read call", golang/go#68560)
// and closed it under the client.
func TestConnectorKeepsTheConnectionWhenTheGatewayIsDown(t *testing.T) {
	e := newEnv(t)
	e.gw.Close()
	c, err := connector.New(connector.Config{
		Resolve: func(context.Context) (string, error) { return e.gw.URL(), nil },
		TLS:     e.ca.ClientTLS(t, "spiffe://test.mesh/agent/a"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	endpoint := serveListener(t, c)
	conn, err := net.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(endpoint, "http://"), "/mcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i := range 3 {
		req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(initializeBody))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		for k, v := range mcpHeaders {
			req.Header.Set(k, v)
		}
		if err := req.Write(conn); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("request %d on the same connection: %v (the connector closed it)", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := decodeRPCErr(t, string(body)); resp.StatusCode != http.StatusBadGateway || got.Error.Data.Reason != reason.GatewayUnreachable {
			t.Fatalf("request %d: %d %s, want 502 with reason %s", i+1, resp.StatusCode, body, reason.GatewayUnreachable)
		}
	}
}
