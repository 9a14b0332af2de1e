package gateway

import (
	"net/http"
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// excludePolicy grants agent:fraud the public resources except the secret
// ones, and query only without DELETE.
const excludePolicy = `{"grants": [
  {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["echo", "query"],
   "resources": ["db://public/*", "!db://public/secret*"],
   "when": "tool.name != 'query' || !has(args.sql) || !args.sql.matches(r'(?i)\\bdelete\\b')"},
]}`

// TestGatewayRefusesOtherSpellingsOfResourcesAndKeys: every URI a rule
// matches (resources/read, resources/subscribe, completion references,
// subscriptions/listen resourceSubscriptions) must be in canonical form, and
// a key that differs only in case from one the gateway or a when reads is
// refused; nothing of it reaches the upstream, and each refusal is audited.
func TestGatewayRefusesOtherSpellingsOfResourcesAndKeys(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.gw.Update(f.state(excludePolicy))
	ctx := testContext(t)
	c := f.httpClient(f.fraud)
	sid := f.rawSession(ctx, c, "2025-11-25")
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
	tests := []struct {
		name, body string
		code       int
		reason     reason.Code
	}{
		{"scheme case", call(1, "resources/read", `{"uri":"DB://public/a"}`), CodeDenied, "noncanonical_uri"},
		{"host case", call(2, "resources/read", `{"uri":"db://PUBLIC/a"}`), CodeDenied, "noncanonical_uri"},
		{"dot segment", call(3, "resources/read", `{"uri":"db://public/./a"}`), CodeDenied, "noncanonical_uri"},
		{"double slash", call(4, "resources/read", `{"uri":"db://public//a"}`), CodeDenied, "noncanonical_uri"},
		{"encoded unreserved", call(5, "resources/read", `{"uri":"db://public/%61"}`), CodeDenied, "noncanonical_uri"},
		{"excluded in other case", call(6, "resources/read", `{"uri":"db://public/SECRET"}`), CodeDenied, "not_granted"},
		{"excluded, encoded", call(7, "resources/read", `{"uri":"db://public/%73ecret"}`), CodeDenied, "noncanonical_uri"},
		{"traversal", call(8, "resources/read", `{"uri":"db://public/x/../secret"}`), CodeDenied, "unsafe_uri"},
		{"subscribe, other spelling", call(9, "resources/subscribe", `{"uri":"db://public/./secret"}`), CodeDenied, "noncanonical_uri"},
		{"completion template, other spelling", call(10, "completion/complete", `{"ref":{"type":"ref/resource","uri":"DB://public/{id}"},"argument":{"name":"id","value":""}}`), CodeDenied, "noncanonical_uri"},
		{"listen for an excluded resource", call(11, "subscriptions/listen", `{"notifications":{"resourceSubscriptions":["db://public/a","db://public/secret"]}}`), CodeDenied, "not_granted"},
		{"listen, other spelling", call(12, "subscriptions/listen", `{"notifications":{"resourceSubscriptions":["db://public//a"]}}`), CodeDenied, "noncanonical_uri"},
		{"listen, key in other case", call(13, "subscriptions/listen", `{"notifications":{"ResourceSubscriptions":["db://private/b"]}}`), CodeRejected, reason.Malformed},
		{"lone Arguments", call(14, "tools/call", `{"name":"echo","Arguments":{"text":"smuggled"}}`), CodeRejected, reason.Malformed},
		{"lone URI", call(15, "resources/read", `{"URI":"db://private/b"}`), CodeRejected, reason.Malformed},
		{"when key in other case", call(16, "tools/call", `{"name":"query","arguments":{"SQL":"delete from payments"}}`), CodeRejected, "case_variant_key"},
		{"when key with long s", call(17, "tools/call", `{"name":"query","arguments":{"\u017fql":"delete from payments"}}`), CodeRejected, "case_variant_key"},
		{"no NFC spelling (once a stack overflow)", call(18, "resources/read", `{"uri":"db://public/a?%3D%CC%B8"}`), CodeDenied, "noncanonical_uri"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(f.up.Bodies())
			status, _, b := f.rawPost(ctx, c, tt.body, hdr)
			d := rpcError(t, b)
			if status != http.StatusOK || d.Code != tt.code || d.Reason != tt.reason {
				t.Fatalf("%d %+v, want code %d reason %s", status, d, tt.code, tt.reason)
			}
			if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Reason != tt.reason {
				t.Fatalf("audit event %+v (found %v)", ev, ok)
			}
			if len(f.up.Bodies()) != n {
				t.Fatal("forwarded upstream")
			}
		})
	}
	// The canonical spellings are served.
	if status, _, b := f.rawPost(ctx, c, call(30, "resources/read", `{"uri":"db://public/a"}`), hdr); status != http.StatusOK || f.up.Calls.Count("resource:db://public/a") != 1 {
		t.Fatalf("canonical read: %d %s", status, b)
	}
	if status, _, b := f.rawPost(ctx, c, call(31, "tools/call", `{"name":"query","arguments":{"sql":"select 1"}}`), hdr); status != http.StatusOK || f.up.Calls.Count("tool:query") != 1 {
		t.Fatalf("exactly spelled query: %d %s", status, b)
	}
}
