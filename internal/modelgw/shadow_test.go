package modelgw

import (
	"net/http"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayEnforcesActivePolicyAndRecordsShadowDenialOfModel: the
// shadow grants agent:fraud embeddings only; a gpt-4o chat the active
// policy allows is served, and its event carries the shadow's denial. A
// request both allow carries no shadow.
func TestGatewayEnforcesActivePolicyAndRecordsShadowDenialOfModel(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	st := f.state(basePolicy)
	shadow, err := policy.Compile([]byte(`{"grants":[{"src":["agent:fraud"],"dst":["model:llm"],"models":["text-embedding-*"]}]}`), "shadow-2")
	if err != nil {
		t.Fatal(err)
	}
	st.Shadow = shadow
	f.gw.Update(st)

	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != http.StatusOK {
		t.Fatalf("status %d: %s; the active policy allows it", res.status, res.body)
	}
	evs := f.rec.Events()
	e := evs[len(evs)-1]
	want := audit.ShadowDecision{Decision: audit.Deny, Reason: reason.NotGranted, PolicyVersion: "shadow-2"}
	if e.Decision != audit.Allow || e.Model != "gpt-4o" || e.Shadow == nil || *e.Shadow != want {
		t.Fatalf("event %+v, shadow %+v; want the active allow and %+v", e, e.Shadow, want)
	}
	if res := f.do(f.fraud, "POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`); res.status != http.StatusOK {
		t.Fatalf("embeddings status %d: %s", res.status, res.body)
	}
	evs = f.rec.Events()
	if e := evs[len(evs)-1]; e.Decision != audit.Allow || e.Shadow != nil {
		t.Fatalf("embeddings event %+v carries shadow %+v; both allow", e, e.Shadow)
	}
}
