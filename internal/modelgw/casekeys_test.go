package modelgw

import (
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayRefusesBodyKeysThatDifferOnlyInCase covers the README's own
// example: `!has(args.max_tokens) || args.max_tokens <= 1000` held for
// {"Max_Tokens": 100000}, which an upstream written with encoding/json
// binds to max_tokens. Such a body is refused, recorded and not forwarded;
// the same for the fields the gateway itself reads.
func TestGatewayRefusesBodyKeysThatDifferOnlyInCase(t *testing.T) {
	doc := strings.Replace(basePolicy, `"grants"`, `"limits": [
	  {"src": ["agent:fraud"], "dst": ["model:llm"], "models": ["gpt-4o"], "tokens_per_day": 1000}], "grants"`, 1)
	f := newFixture(t, fixtureOpts{policy: doc})
	tests := []struct {
		name, extra string
		reason      reason.Code
	}{
		{"capitalised max_tokens", `"Max_Tokens":100000`, reason.CaseVariantKey},
		{"upper-case max_tokens", `"MAX_TOKENS":100000`, reason.CaseVariantKey},
		{"Kelvin sign is not k: untouched key", `"\u212aeep":1`, ""},
		{"capitalised stream dodges include_usage", `"Stream":true`, reason.Malformed},
		{"capitalised include_usage", `"stream":true,"stream_options":{"include_usage":true,"Include_Usage":false}`, reason.Malformed},
		{"lone capitalised include_usage", `"stream":false,"stream_options":{"Include_Usage":true}`, reason.Malformed},
		{"capitalised model beside model", `"Model":"gpt-4o-mini"`, reason.Malformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.up.Received())
			res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", tt.extra))
			if tt.reason == "" {
				if res.status != 200 {
					t.Fatalf("status %d: %s", res.status, res.body)
				}
				return
			}
			b := res.errBody(t)
			if res.status != 400 || b.Reason != tt.reason || b.AuditEvent == "" {
				t.Fatalf("status %d, body %s; want 400 %s", res.status, res.body, tt.reason)
			}
			ev, ok := f.rec.ByID(b.AuditEvent)
			if !ok || ev.Decision != audit.Deny || ev.Reason != tt.reason || ev.Outcome != "rejected" {
				t.Fatalf("audit event %+v (found %v)", ev, ok)
			}
			if len(f.up.Received()) != before {
				t.Fatal("the refused body reached the upstream")
			}
		})
	}
	// Spelled exactly, the when decides as written.
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", `"max_tokens":100000`)); res.status != 403 || res.errBody(t).Reason != reason.WhenFalse {
		t.Fatalf("max_tokens over the limit: %d %s", res.status, res.body)
	}
}
