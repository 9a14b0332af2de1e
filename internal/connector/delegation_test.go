package connector_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/connectortest"
	"github.com/agentmesh/agentmesh/internal/delegation"
)

// The connector sends the delegation it is given with every request,
// the newest each time, and sends nothing when there is none.
func TestConnectorSendsTheDelegationHeader(t *testing.T) {
	ca := connectortest.NewCA(t)
	up := newUpstream(t)
	gw := connectortest.StartGateway(t, ca, up)
	var mu sync.Mutex
	tok, fail := "amd1.first", false
	c, err := connector.New(connector.Config{
		Resolve: gw.Resolve,
		TLS:     ca.ClientTLS(t, "spiffe://test.mesh/agent/tester"),
		Delegation: func() (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return "", errors.New("user:alice@example.com has given this agent no live delegation")
			}
			return tok, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	headers := func() []string {
		var out []string
		for _, r := range up.recordedRequests("POST initialize") {
			out = append(out, r.header.Get(delegation.Header))
		}
		return out
	}
	if line := stdioAnswer(t, c, initializeBody); !strings.Contains(line, `"result"`) {
		t.Fatalf("initialize: %s", line)
	}
	mu.Lock()
	tok = "amd1.second" // a newer delegation arrived
	mu.Unlock()
	if line := stdioAnswer(t, c, initializeBody); !strings.Contains(line, `"result"`) {
		t.Fatalf("initialize: %s", line)
	}
	if got := headers(); len(got) != 2 || got[0] != "amd1.first" || got[1] != "amd1.second" {
		t.Fatalf("the gateway saw %s headers %q, want the first then the second", delegation.Header, got)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	before := len(up.recordedRequests("POST initialize"))
	line := stdioAnswer(t, c, initializeBody)
	if !strings.Contains(line, `"error"`) || !strings.Contains(line, "no live delegation") || !strings.Contains(line, `"reason":"delegation_expired"`) {
		t.Fatalf("without a delegation the agent got %s", line)
	}
	if n := len(up.recordedRequests("POST initialize")); n != before {
		t.Fatalf("a request went out without its delegation (%d, was %d)", n, before)
	}
	up.closeSessions()
}
