package connector_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
)

// TestAGatewayAnswerBeforeTheWholeBodyReachesTheAgent: the gateway
// answers (a refusal, say) before the agent has sent its whole body. The
// agent gets the answer: the connector ends the body's copy to the
// gateway (which over HTTP/2 the response's Close waits for) instead of
// waiting for the rest of a body the agent may never send. Ending that
// copy before the handler returns is also what keeps the server from
// reading the connection for the next request while the copy still reads
// the body (net/http panics then, "invalid concurrent Body.Read call": the
// demo's revocation step showed it; that race has no deterministic test).
func TestAGatewayAnswerBeforeTheWholeBodyReachesTheAgent(t *testing.T) {
	ca := connectortest.NewCA(t)
	answered := make(chan struct{})
	gw := connectortest.StartGateway(t, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32040,"message":"revoked","data":{"reason":"revoked"}}}`)
		close(answered)
	}))
	c, err := connector.New(connector.Config{Resolve: gw.Resolve, TLS: ca.ClientTLS(t, "spiffe://test.mesh/agent/tester")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	endpoint := serveListener(t, c)
	u, _ := url.Parse(endpoint)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A bound, not a wait: before the fix the answer never came.
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	// Ten bytes of a body announced as 100,000: the rest never comes.
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100000\r\n\r\n{\"jsonrpc\"", u.Host, testToken)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer from the connector: %v", err)
	}
	resp.Body.Close()
	<-answered
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want the gateway's 403", resp.StatusCode)
	}
}
