package connector_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestConnectorPassesOnWhyTheGatewayCutACall: a gateway that ends a
// caller's access mid-call answers the call in flight with its refusal
// (-32040, data.reason and data.event_id), as the last event of the
// call's stream or as a 403 before the answer started. The connector
// passes that answer on as is, on the stdio and the HTTP endpoint: the
// stream did end, but with an answer, so it is no unreachable gateway.
func TestConnectorPassesOnWhyTheGatewayCutACall(t *testing.T) {
	const cut = `{"jsonrpc":"2.0","id":7,"error":{"code":-32040,"message":"access ended (delegation_revoked): …","data":{"reason":"delegation_revoked","event_id":"e1"}}}`
	const call = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"wait","arguments":{}}}`
	for _, tc := range []struct {
		name string
		gw   http.HandlerFunc
	}{
		{"event stream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("event: message\ndata: " + cut + "\n\n"))
		}},
		{"403", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(cut))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := connectortest.NewCA(t)
			gw := connectortest.StartGateway(t, ca, tc.gw)
			c, err := connector.New(connector.Config{Resolve: gw.Resolve, TLS: ca.ClientTLS(t, "spiffe://test.mesh/agent/a")})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			check := func(where, answer string) {
				got := decodeRPCErr(t, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(answer), "event: message\ndata: ")))
				if got.Error.Code != -32040 || got.Error.Data.Reason != reason.DelegationRevoked || !strings.Contains(answer, `"event_id":"e1"`) {
					t.Errorf("%s: %s, want the gateway's delegation_revoked error as is", where, answer)
				}
			}
			_, body := rawRequest(t, serveListener(t, c), http.MethodPost, "", mcpHeaders, call)
			check("HTTP endpoint", body)
			check("stdio endpoint", stdioAnswer(t, c, call))
		})
	}
}
