package modelgw

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
)

func TestGatewayDecidesModelByGlob(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	tests := []struct {
		name   string
		fraud  bool
		path   string
		model  string
		status int
		reason reason.Code
	}{
		{"prefix glob allows", true, "/v1/chat/completions", "gpt-4o", 200, "allowed"},
		{"exclusion denies", true, "/v1/chat/completions", "gpt-4o-mini", 403, "not_granted"},
		{"embeddings allowed", true, "/v1/embeddings", "text-embedding-3-small", 200, "allowed"},
		{"other grant's model denied", false, "/v1/chat/completions", "gpt-4o", 403, "not_granted"},
		{"other allowed its model", false, "/v1/chat/completions", "gpt-4o-mini", 200, "allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := f.other
			if tt.fraud {
				cert = f.fraud
			}
			res := f.do(cert, "POST", tt.path, chatBody(tt.model, ""))
			if res.status != tt.status {
				t.Fatalf("status %d, want %d: %s", res.status, tt.status, res.body)
			}
			ev, full := f.lastEvent()
			if ev.Reason != tt.reason || ev.Model != tt.model || ev.Status != tt.status {
				t.Fatalf("audit event %s, want reason %s model %s status %d", full, tt.reason, tt.model, tt.status)
			}
		})
	}
}

func TestGatewayDenialBodyCarriesReasonAndAuditEvent(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o-mini", ""))
	if res.status != http.StatusForbidden || !strings.HasPrefix(res.header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d (%s), want 403 JSON", res.status, res.header.Get("Content-Type"))
	}
	b := res.errBody(t)
	if b.Reason != "not_granted" || b.Error.Code != "not_granted" || b.Error.Type != "permission_denied" || b.Error.Message == "" ||
		b.AuditEvent == "" || b.Error.AuditEvent != b.AuditEvent {
		t.Fatalf("body %s", res.body)
	}
	ev, ok := f.rec.ByID(b.AuditEvent)
	if !ok || ev.Decision != audit.Deny || ev.Model != "gpt-4o-mini" || ev.Src == "" || ev.Dst != f.gwID.String() {
		t.Fatalf("audit event %q: %+v (found %v)", b.AuditEvent, ev, ok)
	}
	if n := len(f.up.Received()); n != 0 {
		t.Fatalf("upstream received %d requests after a denial", n)
	}
}

func TestGatewayRefusesPeerOutsideNetmap(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	res := f.do(f.outsider, "GET", "/v1/models", "")
	if res.status != http.StatusForbidden || res.errBody(t).Reason != "unknown_peer" {
		t.Fatalf("status %d body %s, want 403 unknown_peer", res.status, res.body)
	}
}

func TestGatewayFiltersModelList(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, tt := range []struct {
		name  string
		fraud bool
		want  []string
	}{
		{"fraud", true, []string{"gpt-4o", "text-embedding-3-small"}},
		{"other", false, []string{"gpt-4o-mini"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert := f.other
			if tt.fraud {
				cert = f.fraud
			}
			res := f.do(cert, "GET", "/v1/models", "")
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			object, got := modelIDs(t, res.body)
			if object != "list" || !slices.Equal(got, tt.want) {
				t.Fatalf("models %v (object %q), want %v", got, object, tt.want)
			}
		})
	}
}

func TestGatewayDeniesPathUnlessGrantNamesIt(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	res := f.do(f.fraud, "POST", "/v1/audio/speech", `{"input":"hi"}`)
	if res.status != 403 || res.errBody(t).Reason != "not_granted" {
		t.Fatalf("fraud: status %d body %s, want 403 not_granted", res.status, res.body)
	}
	// agent:other's grant names POST /v1/audio/*: forwarded (the test
	// upstream has no such route and answers 404 itself).
	res = f.do(f.other, "POST", "/v1/audio/speech", `{"input":"hi"}`)
	if res.status != 404 {
		t.Fatalf("other: status %d body %s, want the upstream's 404", res.status, res.body)
	}
	if ev, full := f.lastEvent(); ev.Decision != audit.Allow || ev.Status != 404 {
		t.Fatalf("audit event %s", full)
	}
	res = f.do(f.other, "GET", "/v1/audio/speech", "")
	if res.status != 403 {
		t.Fatalf("GET not named by the grant: status %d, want 403", res.status)
	}
	res = f.do(f.other, "POST", "/v1/audio/../chat/completions", chatBody("gpt-4o", ""))
	if res.status != 400 || res.errBody(t).Reason != reason.BadPath {
		t.Fatalf("dot segments: status %d body %s, want 400 bad_path", res.status, res.body)
	}
}

func TestGatewayWhenSeesMaxTokensAndStream(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, tt := range []struct {
		name   string
		fraud  bool
		body   string
		status int
	}{
		{"max_tokens within bound", true, chatBody("gpt-4o", `"max_tokens":500`), 200},
		{"max_tokens over bound", true, chatBody("gpt-4o", `"max_tokens":2000`), 403},
		{"other model unaffected", true, chatBody("gpt-4o-2024", `"max_tokens":2000`), 200},
		{"stream false allowed", false, chatBody("gpt-4o-mini", `"stream":false`), 200},
		{"stream true denied", false, chatBody("gpt-4o-mini", `"stream":true`), 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert := f.other
			if tt.fraud {
				cert = f.fraud
			}
			res := f.do(cert, "POST", "/v1/chat/completions", tt.body)
			if res.status != tt.status {
				t.Fatalf("status %d, want %d: %s", res.status, tt.status, res.body)
			}
			if tt.status == 403 && res.errBody(t).Reason != "when_false" {
				t.Fatalf("reason %s, want when_false", res.body)
			}
		})
	}
}

func TestGatewayRejectsMalformedAndOversizedBodies(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, tt := range []struct {
		name   string
		body   string
		status int
		reason reason.Code
	}{
		{"duplicate model", `{"model":"gpt-4o","model":"gpt-4o-mini"}`, 400, reason.Malformed},
		{"case variant model", `{"model":"gpt-4o","Model":"gpt-4o-mini"}`, 400, reason.Malformed},
		{"model not a string", `{"model":5}`, 400, reason.Malformed},
		{"trailing data", `{"model":"gpt-4o"} {}`, 400, reason.Malformed},
		{"too large", `{"model":"gpt-4o","pad":"` + strings.Repeat("x", 70<<10) + `"}`, 413, reason.TooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(f.fraud, "POST", "/v1/chat/completions", tt.body)
			if res.status != tt.status || res.errBody(t).Reason != tt.reason {
				t.Fatalf("status %d body %s, want %d %s", res.status, res.body, tt.status, tt.reason)
			}
		})
	}
	if n := len(f.up.Received()); n != 0 {
		t.Fatalf("upstream received %d requests", n)
	}
}

func TestGatewayRecordsUsageStatusAndTTFB(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	base := f.local(f.fraud)
	c := localClient(t, nil)
	for _, tt := range []struct {
		name, path, body string
		want             audit.Usage
	}{
		{"chat", "/v1/chat/completions", chatBody("gpt-4o", ""), audit.Usage{PromptTokens: 7, CompletionTokens: 5, TotalTokens: 12}},
		{"stream with usage", "/v1/chat/completions", chatBody("gpt-4o", `"stream":true,"stream_options":{"include_usage":true}`),
			audit.Usage{PromptTokens: 7, CompletionTokens: 5, TotalTokens: 12}},
		{"embeddings", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`, audit.Usage{PromptTokens: 3, TotalTokens: 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, c, "POST", base+tt.path, tt.body)
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			evs := f.rec.Events()
			e := evs[len(evs)-1]
			if e.Usage == nil || *e.Usage != tt.want || e.Status != 200 || e.Decision != audit.Allow || e.TTFBUS <= 0 && e.LatencyUS < 0 {
				t.Fatalf("event %+v usage %+v, want usage %+v", e, e.Usage, tt.want)
			}
		})
	}
	// The upstream never saw the agent's key, only the gateway's.
	for _, r := range f.up.Received() {
		if r.Authorization != "Bearer upstream-key" {
			t.Fatalf("upstream got Authorization %q", r.Authorization)
		}
	}
}

func TestGatewayStreamsChunksWithoutBuffering(t *testing.T) {
	gate := make(chan struct{})
	f := newFixture(t, fixtureOpts{gate: gate})
	base := f.local(f.fraud)
	c := localClient(t, nil)
	resp, err := c.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(chatBody("gpt-4o", `"stream":true,"stream_options":{"include_usage":true}`)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("status %d content type %q", resp.StatusCode, ct)
	}
	sr := sse.NewReader(resp.Body, 1<<20)
	var chunks []string
	for {
		ev, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !ev.HasData {
			continue
		}
		chunks = append(chunks, string(ev.Data))
		// The upstream sends chunk i+1 only after the gate opens: reading
		// chunk i here first proves nothing waited for the whole stream.
		if len(chunks) < len(modelgwtest.StreamChunks) {
			gate <- struct{}{}
		}
	}
	if len(chunks) < 2 || chunks[len(chunks)-1] != "[DONE]" || !strings.Contains(chunks[0], modelgwtest.StreamChunks[0]) {
		t.Fatalf("chunks %q", chunks)
	}
}

func TestGatewayRateLimitsRequestsPerMinute(t *testing.T) {
	doc := strings.Replace(basePolicy, `"grants"`, `"limits": [{"src": ["agent:fraud"], "dst": ["model:llm"], "rpm": 2}], "grants"`, 1)
	f := newFixture(t, fixtureOpts{policy: doc})
	for i := range 2 {
		if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 200 {
			t.Fatalf("request %d: status %d %s", i, res.status, res.body)
		}
	}
	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	b := res.errBody(t)
	if res.status != 429 || b.Reason != reason.LimitRPM || b.Error.Type != "rate_limit_exceeded" || res.header.Get("Retry-After") != "30" {
		t.Fatalf("status %d Retry-After %q body %s", res.status, res.header.Get("Retry-After"), res.body)
	}
	if ev, ok := f.rec.ByID(b.AuditEvent); !ok || ev.Status != 429 || ev.Rule != "limits[0]" {
		t.Fatalf("audit event %+v", ev)
	}
	// agent:other has no limit.
	if res := f.do(f.other, "POST", "/v1/chat/completions", chatBody("gpt-4o-mini", "")); res.status != 200 {
		t.Fatalf("other: status %d", res.status)
	}
	f.clock.add(30 * time.Second)
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 200 {
		t.Fatalf("next minute: status %d %s", res.status, res.body)
	}
}

func TestGatewayLimitsTokensPerDayAcrossRestart(t *testing.T) {
	doc := strings.Replace(basePolicy, `"grants"`,
		`"limits": [{"src": ["agent:fraud"], "dst": ["model:llm"], "models": ["gpt-4o*"], "tokens_per_day": 20}], "grants"`, 1)
	f := newFixture(t, fixtureOpts{policy: doc, stateDir: t.TempDir()})
	// 12 tokens each: the second request starts under the budget (12 < 20)
	// and takes it to 24; the third is refused.
	for i := range 2 {
		if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 200 {
			t.Fatalf("request %d: status %d %s", i, res.status, res.body)
		}
	}
	// Embeddings are not covered by the limit's models.
	if res := f.do(f.fraud, "POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"x"}`); res.status != 200 {
		t.Fatalf("embeddings: status %d", res.status)
	}
	check := func(when string) {
		t.Helper()
		res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
		if res.status != 429 || res.errBody(t).Reason != reason.LimitTokens || res.header.Get("Retry-After") == "" {
			t.Fatalf("%s: status %d body %s", when, res.status, res.body)
		}
	}
	check("before restart")
	f.stop()
	f.start(doc)
	check("after restart")
	f.clock.add(24 * time.Hour)
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 200 {
		t.Fatalf("next day: status %d %s", res.status, res.body)
	}
}

func TestGatewayAppliesLivePolicyUpdate(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != 200 {
		t.Fatalf("before: status %d", res.status)
	}
	f.gw.Update(f.state(`{"grants": [{"src": ["agent:fraud"], "dst": ["model:llm"], "models": ["text-embedding-*"]}]}`))
	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	if res.status != 403 || res.errBody(t).Reason != "not_granted" {
		t.Fatalf("after: status %d %s", res.status, res.body)
	}
	f.gw.Update(nil)
	if res := f.do(f.fraud, "GET", "/v1/models", ""); res.status != 403 {
		t.Fatalf("nil state: status %d %s", res.status, res.body)
	}
}

// TestLocalEndpointAnswersUnreachableAsTheGatewayNotItsUpstream: the
// local endpoint's answer for a gateway it cannot reach says so
// (gateway_unreachable, in the gateway's error shape), distinct from the
// gateway's upstream_error for an upstream that failed, so that the
// person reading it knows which hop to look at.
func TestLocalEndpointAnswersUnreachableAsTheGatewayNotItsUpstream(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	base := f.local(f.fraud)
	f.stop()
	res := do(t, localClient(t, nil), "GET", base+"/v1/models", "")
	if eb := res.errBody(t); res.status != http.StatusBadGateway || eb.Reason != reason.GatewayUnreachable || eb.Error.Type != "api_error" {
		t.Fatalf("gateway down: %d %s", res.status, res.body)
	}
}

// modelIDs decodes a /v1/models answer: its object and its models' IDs.
func modelIDs(t *testing.T, body []byte) (string, []string) {
	t.Helper()
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return list.Object, ids
}
