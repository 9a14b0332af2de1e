package modelgw

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
)

const streamWithUsage = `"stream":true,"stream_options":{"include_usage":true}`

// openStream starts a streamed chat completion through the local proxy and
// returns the response and a reader of its events.
func openStream(t *testing.T, base, body string) (*http.Response, *sse.Reader) {
	t.Helper()
	c := localClient(t, nil)
	resp, err := c.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp, sse.NewReader(resp.Body, 1<<20)
}

// nextData returns the data of the next event of an SSE stream that has
// data.
func nextData(t *testing.T, r *sse.Reader) (string, bool) {
	t.Helper()
	for {
		ev, err := r.Next()
		if err != nil {
			return "", false
		}
		if ev.HasData {
			return string(ev.Data), true
		}
	}
}

func TestGatewayCutsStreamOfPeerThatLostAccess(t *testing.T) {
	gate := make(chan struct{})
	f := newFixture(t, fixtureOpts{gate: gate})
	_, sc := openStream(t, f.local(f.fraud), chatBody("gpt-4o", streamWithUsage))
	if d, ok := nextData(t, sc); !ok || !strings.Contains(d, modelgwtest.StreamChunks[0]) {
		t.Fatalf("first chunk %q", d)
	}
	// agent:fraud is revoked while its stream waits for the next chunk.
	st := f.state(basePolicy)
	fr := st.Peers["fraud"]
	fr.Revoked = true
	st.Peers["fraud"] = fr
	f.gw.Update(st)
	// The stream ends without the upstream sending another chunk (the gate
	// is never opened).
	for {
		d, ok := nextData(t, sc)
		if !ok {
			break
		}
		if d == "[DONE]" || strings.Contains(d, modelgwtest.StreamChunks[1]) {
			t.Fatalf("stream went on after revocation: %q", d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Outcome == "stream_cut" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Allow || ev.Model != "gpt-4o" {
		t.Fatalf("event %+v", ev)
	}
	// New requests are refused too.
	if res := f.do(f.fraud, "GET", "/v1/models", ""); res.status != 403 || res.errBody(t).Reason != reason.Revoked {
		t.Fatalf("after revocation: %d %s", res.status, res.body)
	}
}

func TestGatewayRequiresUsageForStreamsUnderTokenLimit(t *testing.T) {
	doc := strings.Replace(basePolicy, `"grants"`, `"limits": [
	  {"src": ["agent:fraud"], "dst": ["model:llm"], "models": ["gpt-4o"], "tokens_per_day": 1000},
	  {"src": ["agent:fraud"], "dst": ["model:llm"], "models": ["gpt-4o-2024"], "rpm": 100}], "grants"`, 1)
	f := newFixture(t, fixtureOpts{policy: doc})
	tests := []struct {
		name, model, extra string
		status             int
		reason             reason.Code
	}{
		{"stream without usage under a token limit", "gpt-4o", `"stream":true`, 403, reason.UsageRequired},
		{"include_usage false", "gpt-4o", `"stream":true,"stream_options":{"include_usage":false}`, 403, reason.UsageRequired},
		{"stream with usage", "gpt-4o", streamWithUsage, 200, "allowed"},
		{"no stream", "gpt-4o", "", 200, "allowed"},
		{"stream under a requests-only limit", "gpt-4o-2024", `"stream":true`, 200, "allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody(tt.model, tt.extra))
			if res.status != tt.status {
				t.Fatalf("status %d, want %d: %s", res.status, tt.status, res.body)
			}
			if ev, full := f.lastEvent(); ev.Reason != tt.reason {
				t.Fatalf("event %s, want reason %s", full, tt.reason)
			}
		})
	}
}

func TestGatewayRejectsNestedDuplicateKeys(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, body := range []string{
		chatBody("gpt-4o", `"stream_options":{"include_usage":true,"include_usage":false}`),
		chatBody("gpt-4o", `"metadata":{"a":1,"A":2}`),
		`{"model":"gpt-4o","messages":[],"model":"gpt-4o-mini"}`,
		`{"model":"gpt-4o","Model":"gpt-4o-mini","messages":[]}`,
	} {
		res := f.do(f.fraud, "POST", "/v1/chat/completions", body)
		if res.status != 400 || res.errBody(t).Reason != reason.Malformed {
			t.Fatalf("%s: status %d %s", body, res.status, res.body)
		}
	}
	if n := len(f.up.Received()); n != 0 {
		t.Fatalf("upstream received %d ambiguous bodies", n)
	}
}

func TestGatewayRecordsStreamTTFBAtFirstChunk(t *testing.T) {
	gate := make(chan struct{})
	f := newFixture(t, fixtureOpts{gate: gate, tick: time.Millisecond})
	_, sc := openStream(t, f.local(f.fraud), chatBody("gpt-4o", streamWithUsage))
	if _, ok := nextData(t, sc); !ok {
		t.Fatal("no first chunk")
	}
	// The model "thinks" for ten seconds between the first chunk and the
	// rest: the time to first byte must not include them, the latency must.
	f.clock.add(10 * time.Second)
	for range len(modelgwtest.StreamChunks) - 1 {
		gate <- struct{}{}
	}
	for {
		if _, ok := nextData(t, sc); !ok {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Decision == audit.Allow })
	if err != nil {
		t.Fatal(err)
	}
	if ev.TTFBUS <= 0 || ev.TTFBUS >= (10*time.Second).Microseconds() || ev.LatencyUS < (10*time.Second).Microseconds() {
		t.Fatalf("ttfb %dus latency %dus: want 0 < ttfb < 10s <= latency", ev.TTFBUS, ev.LatencyUS)
	}
	if ev.Usage == nil || ev.Usage.TotalTokens != modelgwtest.TotalTokens || ev.Status != 200 || ev.Outcome != "ok" {
		t.Fatalf("event %+v usage %+v", ev, ev.Usage)
	}
}

func TestGatewayForwardsNoClientCredentials(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	req, err := http.NewRequest("POST", "https://"+f.addr+"/v1/chat/completions", strings.NewReader(chatBody("gpt-4o", "")))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"Content-Type": "application/json", "Authorization": "Bearer agent-secret", "Api-Key": "agent-secret",
		"X-Api-Key": "agent-secret", "Cookie": "s=agent-secret", "Openai-Organization": "org-agent",
		"X-Forwarded-For": "10.9.9.9",
	} {
		req.Header.Set(k, v)
	}
	resp, err := f.client(f.fraud).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := f.up.Received()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests", len(got))
	}
	h := got[0].Header
	if h.Get("Authorization") != "Bearer upstream-key" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("upstream headers %v", h)
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, "agent") || strings.Contains(v, "10.9.9.9") {
				t.Fatalf("upstream got client header %s: %s", k, v)
			}
		}
	}
}

func TestGatewayAuditsRefusedPeerAsConnection(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	res := f.do(f.outsider, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	b := res.errBody(t)
	ev, ok := f.rec.ByID(b.AuditEvent)
	if res.status != 403 || !ok || ev.Kind != audit.KindConnection || ev.Outcome != "refused" || ev.Reason != reason.UnknownPeer || ev.Src == "" {
		t.Fatalf("status %d event %+v (found %v)", res.status, ev, ok)
	}
}

func TestGatewayAnswersUnreachableUpstreamWith502(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	f.stop()
	f.upURL = closed
	f.start(basePolicy)
	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	b := res.errBody(t)
	ev, ok := f.rec.ByID(b.AuditEvent)
	if res.status != 502 || b.Reason != reason.UpstreamError || b.Error.Type != "api_error" || !ok {
		t.Fatalf("status %d body %s", res.status, res.body)
	}
	// The policy allowed it: the trail says so, and what went wrong.
	if ev.Decision != audit.Allow || ev.Outcome != "upstream_error" || ev.Status != 502 {
		t.Fatalf("event %+v", ev)
	}
}

func TestNewRefusesCorruptCountersFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/"+CountersFile, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{Upstream: "http://127.0.0.1:9", Audit: nopRecorder{}, StateDir: dir}, nil)
	if !errors.Is(err, ErrLimitStore) {
		t.Fatalf("New = %v, want ErrLimitStore", err)
	}
}

// TestGatewayRefusesLimitedRequestsWhileCountersCannotBeWritten: failing
// closed, a request under a limit whose count cannot be logged is refused
// (503 limits_unavailable, audited), not let through uncounted; a request
// under no limit goes on.
func TestGatewayRefusesLimitedRequestsWhileCountersCannotBeWritten(t *testing.T) {
	doc := strings.Replace(basePolicy, `"grants"`,
		`"limits": [{"src": ["agent:fraud"], "dst": ["model:llm"], "rpm": 100}], "grants"`, 1)
	f := newFixture(t, fixtureOpts{policy: doc, stateDir: t.TempDir()})
	c := f.gw.counters
	c.mu.Lock()
	c.log.Close()
	c.log = brokenLog{}
	create := c.create
	c.create = func(string, []byte) (logFile, error) { return nil, errDisk }
	c.mu.Unlock()
	// The disk recovers before the gateway stops (cleanups run last
	// first), so that Serve's close can rewrite the log.
	t.Cleanup(func() { c.mu.Lock(); c.create = create; c.mu.Unlock() })
	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	eb := res.errBody(t)
	ev, ok := f.rec.ByID(eb.AuditEvent)
	if res.status != 503 || eb.Reason != reason.LimitsUnavailable || !ok || ev.Reason != reason.LimitsUnavailable {
		t.Fatalf("limited request on a broken disk: status %d body %s", res.status, res.body)
	}
	if n := len(f.up.Received()); n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	if res := f.do(f.other, "POST", "/v1/chat/completions", chatBody("gpt-4o-mini", "")); res.status != 200 {
		t.Fatalf("unlimited request: status %d %s", res.status, res.body)
	}
}

type nopRecorder struct{}

func (nopRecorder) Record(context.Context, *audit.Event) error { return nil }

func TestUpstreamAnswersBase64Embeddings(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	res := f.do(f.fraud, "POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":"x","encoding_format":"base64"}`)
	var got struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(res.body, &got); err != nil || res.status != 200 || len(got.Data) != 1 {
		t.Fatalf("status %d body %s: %v", res.status, res.body, err)
	}
	raw, err := base64.StdEncoding.DecodeString(got.Data[0].Embedding)
	if err != nil || len(raw) != 4*len(modelgwtest.Embedding) {
		t.Fatalf("embedding %q: %v", got.Data[0].Embedding, err)
	}
	for i, want := range modelgwtest.Embedding {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); v != want {
			t.Fatalf("embedding[%d] = %v, want %v", i, v, want)
		}
	}
}
