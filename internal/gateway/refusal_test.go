package gateway

import (
	"net/http"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// refusalsFor is Config.Refusals for a fixture: an aggregator into rec
// when on, else nil (one event per refusal).
func refusalsFor(rec *gatewaytest.Recorder, on bool) *audit.Refusals {
	if !on {
		return nil
	}
	return rec.Refusals()
}

// TestGatewayAggregatesRefusedPeersAndAnswersWithTheAccountingID: a peer
// that is refused over and over writes one event at once and one counted
// aggregate, not an event per attempt; every refusal answer carries the id
// of the event that accounts for that attempt, and nothing reaches the
// upstream.
func TestGatewayAggregatesRefusedPeersAndAnswersWithTheAccountingID(t *testing.T) {
	f := newFixture(t, fixtureOpts{aggregate: true})
	ctx := testContext(t)
	told := map[string]int64{}
	for range 20 {
		status, _, b := f.rawPost(ctx, f.httpClient(f.outsider), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"flood"}}}`, nil)
		d := rpcError(t, b)
		if status != http.StatusForbidden || d.Reason != reason.UnknownPeer || d.EventID == "" {
			t.Fatalf("got %d %+v, want 403 %s with an event id", status, d, reason.UnknownPeer)
		}
		told[d.EventID]++
	}
	// During the flood only the first refusal is written.
	written := 0
	for _, e := range f.rec.Events() {
		if e.Reason == reason.UnknownPeer {
			written++
		}
	}
	if written != 1 {
		t.Fatalf("%d refusals written during the flood, want 1", written)
	}
	if err := f.gw.cfg.Refusals.Close(ctx); err != nil {
		t.Fatal(err)
	}
	f.rec.CheckAccounted(t, reason.UnknownPeer, told, 2)
	if f.up.Received("flood") {
		t.Fatal("a refused request reached the upstream")
	}
}
