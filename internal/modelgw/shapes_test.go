package modelgw

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
)

var (
	shapeMethods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
	shapePaths   = []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
		"/v1/models", "/v1/models/", "/v1/models/gpt-4o", "/v1/models/gpt-4o-mini", "/v1/audio/transcriptions",
		"/", "/v1//models", "/v1/./models", "/v1/models/%2e%2e", "/v1/chat/completions?x=1", "/V1/MODELS", "/v1/files"}
	shapeHeaders = []string{"", "Authorization: Bearer sk-x", "Content-Encoding: gzip", "Accept: text/event-stream",
		"Openai-Beta: assistants=v2", "Expect: 100-continue", "Content-Length: 0"}
	shapeContentTypes = []string{"", "application/json", "text/plain", "multipart/form-data; boundary=x",
		"application/json; charset=utf-16", "application/x-www-form-urlencoded"}
	shapeBodies = []string{"", "null", "[]", "{}", `{"model":1}`, `{"model":""}`, "\xff{}",
		`{"model":"gpt-4o","messages":[]}`,
		`{"model":"gpt-4o","messages":[],"max_tokens":10}`,
		`{"model":"gpt-4o","messages":[],"Max_Tokens":100000}`,
		`{"model":"gpt-4o","MODEL":"gpt-4o-mini"}`,
		`{"MODEL":"gpt-4o"}`,
		`{"model":"gpt-4o","model":"gpt-4o-mini"}`,
		`{"model":"gpt-4o","stream":true}`,
		`{"model":"gpt-4o","Stream":true}`,
		`{"model":"gpt-4o-mini","input":"x"} trailing`,
		`{"model":"gpt-4o","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
		`{"model":"gpt-4o","pad":"` + strings.Repeat("x", 70<<10) + `"}`,
	}
)

// TestGatewayAnswersEveryRequestShape drives a few hundred request shapes
// (methods, clean and unclean paths, client credentials, odd content types
// and encodings, bodies that are empty, not objects, duplicate or
// case-variant keyed, too deep or too large) through the model gateway:
// none may panic a handler (net/http would hide it by dropping the
// connection, so the log is checked too), each gets an HTTP answer, and
// every refusal carries its reason and an audit event.
func TestGatewayAnswersEveryRequestShape(t *testing.T) {
	var log gatewaytest.Log
	f := newFixture(t, fixtureOpts{log: &log})
	c := f.client(f.fraud)
	r := rand.New(rand.NewPCG(13, 8))
	pick := func(l []string) string { return l[r.IntN(len(l))] }
	for i := range 300 {
		method, path, hdr, ct, body := pick(shapeMethods), pick(shapePaths), pick(shapeHeaders), pick(shapeContentTypes), pick(shapeBodies)
		if i%2 == 0 {
			// Half the shapes reach the body decoder.
			method, path = "POST", pick(shapePaths[:4])
		}
		shape := strings.Join([]string{method, path, hdr, ct, body[:min(len(body), 80)]}, " | ")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var rd io.Reader
		if body != "" || method == "POST" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, "https://"+f.addr+path, rd)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if k, v, ok := strings.Cut(hdr, ": "); ok {
			if k == "Content-Length" {
				req.ContentLength, req.Body, req.GetBody = 0, http.NoBody, nil
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := c.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("shape %d (%s): no answer: %v", i, shape, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil {
			t.Fatalf("shape %d (%s): answer cut: %v", i, shape, err)
		}
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusBadGateway {
			t.Errorf("shape %d (%s): %d %s", i, shape, resp.StatusCode, b)
		}
		if resp.StatusCode < 400 || method == "HEAD" {
			continue
		}
		var eb ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Reason == "" {
			continue // the upstream's own answer, passed on
		}
		if eb.AuditEvent == "" || eb.Error.Code != eb.Reason {
			t.Errorf("shape %d (%s): refusal without audit event: %d %s", i, shape, resp.StatusCode, b)
			continue
		}
		if ev, ok := f.rec.ByID(eb.AuditEvent); !ok || ev.Reason != eb.Reason || ev.Status != resp.StatusCode {
			t.Errorf("shape %d (%s): refusal %s has no matching audit event (%+v)", i, shape, b, ev)
		}
	}
	if strings.Contains(log.String(), "panic") {
		t.Fatalf("a handler panicked:\n%s", log.String())
	}
	if res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", "")); res.status != http.StatusOK {
		t.Fatalf("chat after the shapes: %d %s", res.status, res.body)
	}
}
