package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
)

// openaiOutput is what openai_client.mjs prints.
type openaiOutput struct {
	Models []string `json:"models"`
	Chat   struct {
		Content string         `json:"content"`
		Usage   map[string]int `json:"usage"`
	} `json:"chat"`
	Stream struct {
		Content string         `json:"content"`
		Chunks  int            `json:"chunks"`
		Usage   map[string]int `json:"usage"`
	} `json:"stream"`
	Embedding struct {
		Values []float64 `json:"values"`
	} `json:"embedding"`
	Denied struct {
		Status     int    `json:"status"`
		Type       string `json:"type"`
		Code       string `json:"code"`
		Error      string `json:"error"`
		AuditEvent string `json:"auditEvent"`
	} `json:"denied"`
	WrongKey struct {
		Status              int    `json:"status"`
		AuthenticationError bool   `json:"authenticationError"`
		Type                string `json:"type"`
		Code                string `json:"code"`
		Error               string `json:"error"`
	} `json:"wrongKey"`
	Limited []struct {
		Status         int    `json:"status"`
		RateLimitError bool   `json:"rateLimitError"`
		Type           string `json:"type"`
		Code           string `json:"code"`
		RetryAfter     string `json:"retryAfter"`
	} `json:"limited"`
}

// TestOpenAIClientThroughModelEndpoint drives a model node with the
// official openai npm client through `agentmesh connect model:NAME
// --listen`: model list filtered by policy, chat completion plain and
// streamed (with usage), embeddings, and a denied model surfaced as an
// APIError carrying our reason, a model over its rpm limit surfaced as a
// RateLimitError; the audit trail records the usage.
func TestOpenAIClientThroughModelEndpoint(t *testing.T) {
	requireE2E(t)
	if _, err := os.Stat(filepath.Join(nodeModules, "openai", "package.json")); err != nil {
		t.Skip("e2e/node_modules lacks openai: run `npm ci --prefix e2e` (as .ci/run does)")
	}
	up := &modelgwtest.Server{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: up}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })

	m := newMesh(t)
	llm := m.join("model", "llm", "")
	agent := m.join("agent", "research", "")
	m.applyPolicy(`{
  "grants": [
    {"src": ["agent:research"], "dst": ["model:llm"], "models": ["gpt-4o", "gpt-4o-limited", "text-embedding-*"]},
  ],
  "limits": [
    {"src": ["agent:research"], "dst": ["model:llm"], "models": ["gpt-4o-limited"], "rpm": 1},
  ],
}`)
	p := startServer(t, "gateway llm", []string{agentmeshBin, "serve", "--state", llm, "--listen", "127.0.0.1:0",
		"--upstream", "http://" + ln.Addr().String()}, m.env())
	if s, err := p.waitServing(startTimeout); err != nil || s.API != "model" || !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Fatalf("model gateway did not start serving: %+v, %v", s, err)
	}
	c := startServer(t, "connect model:llm", []string{agentmeshBin, "connect", "model:llm", "--state", agent, "--listen", "127.0.0.1:0"}, m.env())
	s, err := c.waitServing(startTimeout)
	if err != nil {
		t.Fatalf("local model endpoint did not start: %v", err)
	}
	baseURL := s.URL
	if !strings.HasPrefix(baseURL, "http://127.0.0.1:") || !strings.HasSuffix(baseURL, "/v1") {
		t.Fatalf("local endpoint at %q, want http://127.0.0.1:PORT/v1", baseURL)
	}
	tokenFile := s.TokenFile
	token := localToken(t, tokenFile, agent)

	in, _ := json.Marshal(map[string]string{"baseURL": baseURL, "apiKey": token, "model": "gpt-4o",
		"embeddingModel": "text-embedding-3-small", "deniedModel": "gpt-4o-mini", "limitedModel": "gpt-4o-limited"})
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "openai_client.mjs")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node openai_client.mjs: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var out openaiOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("openai_client.mjs printed %q: %v", stdout.String(), err)
	}
	want := strings.Join(modelgwtest.StreamChunks, "")
	if !slices.Equal(out.Models, []string{"gpt-4o", "text-embedding-3-small"}) {
		t.Errorf("models.list = %v, want the two granted models", out.Models)
	}
	if out.Chat.Content != want || out.Chat.Usage["total_tokens"] != modelgwtest.TotalTokens {
		t.Errorf("chat = %+v", out.Chat)
	}
	if out.Stream.Content != want || out.Stream.Chunks < len(modelgwtest.StreamChunks) || out.Stream.Usage["total_tokens"] != modelgwtest.TotalTokens {
		t.Errorf("stream = %+v", out.Stream)
	}
	if len(out.Embedding.Values) != len(modelgwtest.Embedding) {
		t.Errorf("embedding = %+v, want %v", out.Embedding, modelgwtest.Embedding)
	} else {
		for i, v := range out.Embedding.Values {
			if math.Abs(v-float64(modelgwtest.Embedding[i])) > 1e-6 {
				t.Errorf("embedding = %v, want %v", out.Embedding.Values, modelgwtest.Embedding)
				break
			}
		}
	}
	if w := out.WrongKey; w.Status != 401 || !w.AuthenticationError || w.Code != "local_auth" || w.Type != "authentication_error" {
		t.Errorf("a client without the endpoint's token: %+v, want an AuthenticationError 401 local_auth", w)
	}
	if out.Denied.Status != 403 || out.Denied.Code != "not_granted" || out.Denied.Type != "permission_denied" || out.Denied.AuditEvent == "" {
		t.Errorf("denied model: %+v, want an APIError 403 permission_denied not_granted with error.audit_event", out.Denied)
	}
	if l := out.Limited; len(l) != 2 || l[0].Status != 200 || l[1].Status != 429 || !l[1].RateLimitError ||
		l[1].Code != "limit_rpm" || l[1].Type != "rate_limit_exceeded" || l[1].RetryAfter == "" {
		t.Errorf("rate-limited model: %+v, want 200 then a RateLimitError 429 limit_rpm with Retry-After", l)
	}
	// The upstream never saw the client's key, the endpoint's token.
	for _, r := range up.Received() {
		if r.Authorization != "" {
			t.Errorf("upstream got Authorization %q", r.Authorization)
		}
	}
	// A refused request never left the machine: the only models.list the
	// upstream saw is the client's own (with the token).
	lists := 0
	for _, r := range up.Received() {
		if r.Path == "/v1/models" {
			lists++
		}
	}
	if lists != 1 {
		t.Errorf("the upstream answered %d model lists, want 1 (the refused one must not reach it)", lists)
	}
	// Once the endpoint stops, its token file goes with it.
	c.stop(t)
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("the token file %s outlived its endpoint (stat: %v)", tokenFile, err)
	}
	// The audit trail reaches the coordinator with the denial and the
	// usage, time to first byte and status of the streamed completion.
	var sawDeny, sawStreamUsage bool
	f := startProc(t, "audit --follow", []string{agentmeshBin, "audit", "--follow", "--limit", "0", "--json", "--state", m.admin}, m.env())
	_, err = f.waitLine(f.stdout, auditTimeout, func(l string) bool {
		var e struct {
			ID, Model, Decision, Reason string
			Status                      int
			TTFBUS                      int64 `json:"ttfb_us"`
			Usage                       *struct {
				TotalTokens int `json:"total_tokens"`
			}
		}
		if json.Unmarshal([]byte(l), &e) != nil {
			return false
		}
		if e.ID == out.Denied.AuditEvent && e.Model == "gpt-4o-mini" && e.Decision == "deny" && e.Reason == "not_granted" && e.Status == 403 {
			sawDeny = true
		}
		if e.Model == "gpt-4o" && e.Decision == "allow" && e.Status == 200 && e.TTFBUS > 0 &&
			e.Usage != nil && e.Usage.TotalTokens == modelgwtest.TotalTokens {
			sawStreamUsage = true
		}
		return sawDeny && sawStreamUsage
	})
	f.stop(t)
	if err != nil {
		t.Fatalf("audit trail: denial seen %v, completion with usage seen %v: %v", sawDeny, sawStreamUsage, err)
	}
	m.verifyAudit()
}
