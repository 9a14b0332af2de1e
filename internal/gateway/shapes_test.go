package gateway

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
)

// requestShape is one HTTP request built from the parts below.
type requestShape struct {
	method, path, session, extra, contentType, body string
}

var (
	shapeMethods  = []string{"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}
	shapePaths    = []string{"/mcp", "/mcp/", "/", "/mcp?x=1", "/other", "/MCP"}
	shapeSessions = []string{"none", "own", "unknown", "empty", "twice", "another's"}
	shapeExtras   = []string{"", "Last-Event-ID: 1", "Mcp-Method: tools/call", "Mcp-Name: drop_table",
		"Mcp-Param-Table: payments", "Mcp-Protocol-Version: 2026-07-28", "Mcp-Protocol-Version: junk version",
		"Accept: text/event-stream", "Accept: image/png", "Content-Length: 0"}
	shapeContentTypes = []string{"", "application/json", "text/plain", "multipart/form-data; boundary=x",
		"application/json; charset=utf-16", "text/event-stream", ";;"}
	shapeBodies = []string{"", "null", "[]", "{}", `{"jsonrpc":"2.0"}`, "\xff\xfe{}",
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Arguments":{"text":"x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","method":"notifications/whatever"}`,
		`{"jsonrpc":"2.0","id":99,"result":{}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"nope"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{}}`,
		`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"db://public/./a"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		strings.Repeat("[", 200) + strings.Repeat("]", 200),
	}
)

// TestGatewayAnswersEveryRequestShape drives a few hundred request shapes
// (methods, paths, missing, unknown, empty, repeated and foreign session
// ids, Last-Event-ID, headers that mirror a body, odd content types and
// bodies) through the gateway, in front of the SDK's HTTP server, of a
// stdio server and of an HTTP server that serves every GET a stream: none
// may panic a handler (net/http would hide it by dropping the connection,
// so the log is checked too), each gets an HTTP answer, and every refusal
// by the gateway carries its reason and an audit event. (A GET without a
// session id once reached the stream code with no session and panicked
// when the upstream answered it with a stream.)
func TestGatewayAnswersEveryRequestShape(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts fixtureOpts
	}{
		{"http upstream", fixtureOpts{}},
		{"stdio upstream", fixtureOpts{stdio: true}},
		{"stateless http upstream", fixtureOpts{upstream: &taskUpstream{getReplay: ": hello\n\n"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var log gatewaytest.Log
			tt.opts.log = &log
			f := newFixture(t, tt.opts)
			ctx := testContext(t)
			fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)
			own := f.rawSession(ctx, fraud, "2025-11-25")
			foreign := f.rawSession(ctx, other, "2025-11-25")

			shapes := []requestShape{
				{method: "GET", path: "/mcp"}, // the shape that panicked
				{method: "GET", path: "/mcp", extra: "Last-Event-ID: 1"},
				{method: "DELETE", path: "/mcp"},
				{method: "GET", path: "/mcp", session: "twice"},
			}
			r := rand.New(rand.NewPCG(13, 8))
			pick := func(l []string) string { return l[r.IntN(len(l))] }
			for range 300 {
				shapes = append(shapes, requestShape{
					method: pick(shapeMethods), path: pick(shapePaths), session: pick(shapeSessions),
					extra: pick(shapeExtras), contentType: pick(shapeContentTypes), body: pick(shapeBodies),
				})
			}
			for i, s := range shapes {
				f.checkShape(ctx, t, i, s, fraud, own, foreign)
			}
			if strings.Contains(log.String(), "panic") {
				t.Fatalf("a handler panicked:\n%s", log.String())
			}
			// The gateway still serves.
			if status, _, b := f.rawPost(ctx, fraud, call(1, "ping", `{}`), map[string]string{"Mcp-Session-Id": own}); status != http.StatusOK {
				t.Fatalf("ping after the shapes: %d %s", status, b)
			}
		})
	}
}

// checkShape sends one request shape and checks its answer.
func (f *fixture) checkShape(ctx context.Context, t *testing.T, i int, s requestShape, c *http.Client, own, foreign string) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends a stream the request opened
	var body io.Reader
	if s.body != "" || s.method == "POST" {
		body = strings.NewReader(s.body)
	}
	url := strings.TrimSuffix(f.url, "/mcp") + s.path
	req, err := http.NewRequestWithContext(ctx, s.method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if s.contentType != "" {
		req.Header.Set("Content-Type", s.contentType)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	switch s.session {
	case "own":
		req.Header.Set("Mcp-Session-Id", own)
	case "unknown":
		req.Header.Set("Mcp-Session-Id", "no-such-session")
	case "empty":
		req.Header["Mcp-Session-Id"] = []string{""}
	case "twice":
		req.Header["Mcp-Session-Id"] = []string{own, own}
	case "another's":
		req.Header.Set("Mcp-Session-Id", foreign)
	}
	if k, v, ok := strings.Cut(s.extra, ": "); ok {
		if k == "Content-Length" {
			req.ContentLength = 0
			req.Body, req.GetBody = http.NoBody, nil
		} else {
			req.Header.Set(k, v)
		}
	}
	if s.session == "own" && s.method == "DELETE" {
		// Ending the shared session would turn the shapes after it into
		// unknown-session ones; a session of its own is ended instead.
		req.Header.Set("Mcp-Session-Id", f.rawSession(ctx, c, "2025-11-25"))
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("shape %d %+v: no answer: %v", i, s, err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") && resp.StatusCode == http.StatusOK {
		return // an open stream: its head is the answer
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("shape %d %+v: answer cut: %v", i, s, err)
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusBadGateway {
		t.Errorf("shape %d %+v: %d %s", i, s, resp.StatusCode, b)
	}
	// A refusal of the gateway's own says why and was audited.
	var msg struct {
		Error *struct {
			Data json.RawMessage `json:"data"`
		} `json:"error"`
	}
	if resp.StatusCode < 400 || json.Unmarshal(b, &msg) != nil || msg.Error == nil || msg.Error.Data == nil {
		return
	}
	var d denial
	if json.Unmarshal(msg.Error.Data, &d) != nil || d.Reason == "" || d.EventID == "" {
		return // the upstream's own error
	}
	if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Reason != d.Reason {
		t.Errorf("shape %d %+v: refusal %+v has no matching audit event (%+v)", i, s, d, ev)
	}
}
