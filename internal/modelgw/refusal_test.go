package modelgw

import (
	"context"
	"testing"

	"agentmesh/internal/reason"
)

// TestGatewayAggregatesRefusedCallers: a caller refused at admission over
// and over writes one event at once and one counted aggregate; each answer
// names the event that accounts for it, and nothing reaches the upstream.
func TestGatewayAggregatesRefusedCallers(t *testing.T) {
	f := newFixture(t, fixtureOpts{aggregate: true})
	told := map[string]int64{}
	for range 12 {
		res := f.do(f.outsider, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
		b := res.errBody(t)
		if res.status != 403 || b.Reason != reason.UnknownPeer || b.AuditEvent == "" || b.Error.AuditEvent != b.AuditEvent {
			t.Fatalf("status %d body %+v", res.status, b)
		}
		told[b.AuditEvent]++
	}
	if err := f.refusals.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.rec.CheckAccounted(t, reason.UnknownPeer, told, 2)
	if got := f.up.Received(); len(got) != 0 {
		t.Fatalf("refused requests reached the upstream: %d", len(got))
	}
}
