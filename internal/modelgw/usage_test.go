package modelgw

import (
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
)

func TestUsageIsReadFromEveryResponseShape(t *testing.T) {
	tests := []struct {
		name, body string
		want       *audit.Usage
	}{
		{"chat", `{"id":"x","usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}`, &audit.Usage{PromptTokens: 7, CompletionTokens: 5, TotalTokens: 12}},
		{"embeddings", `{"data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}`, &audit.Usage{PromptTokens: 3, TotalTokens: 3}},
		{"responses", `{"type":"response.completed","response":{"usage":{"input_tokens":4,"output_tokens":6,"total_tokens":10}}}`, &audit.Usage{PromptTokens: 4, CompletionTokens: 6, TotalTokens: 10}},
		{"total missing", `{"usage":{"prompt_tokens":2,"completion_tokens":3}}`, &audit.Usage{PromptTokens: 2, CompletionTokens: 3, TotalTokens: 5}},
		{"null usage", `{"usage":null}`, nil},
		{"none", `{"id":"x"}`, nil},
		{"not json", `usage`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := usageOf([]byte(tt.body)).toAudit()
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Fatalf("usage %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSSEUsageTakesTheLastChunkAcrossSplitWrites(t *testing.T) {
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n" +
		": comment\r\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\r\n\r\n" +
		"data: [DONE]\n\n"
	for _, size := range []int{1, 2, 7, 64, len(stream)} {
		var s sseUsage
		for i := 0; i < len(stream); i += size {
			s.Write([]byte(stream[i:min(i+size, len(stream))]))
		}
		if got := s.last.toAudit(); got == nil || got.TotalTokens != 3 || got.CompletionTokens != 2 {
			t.Fatalf("writes of %d bytes: usage %+v", size, got)
		}
	}
}

func TestSSEUsageSkipsOverlongLines(t *testing.T) {
	var s sseUsage
	s.Write([]byte("data: {\"usage\":{\"total_tokens\":1}," + strings.Repeat("x", maxSSELine) + "\n"))
	s.Write([]byte("data: {\"usage\":{\"total_tokens\":9}}\n"))
	if got := s.last.toAudit(); got == nil || got.TotalTokens != 9 {
		t.Fatalf("usage %+v", got)
	}
}

func TestUsageInTailOfALargeResponse(t *testing.T) {
	tw := &tailWriter{max: 64}
	body := `{"data":[` + strings.Repeat(`{"embedding":[0.1,0.2]},`, 1000) + `{}],"usage": {"prompt_tokens":30,"total_tokens":30}}`
	for i := 0; i < len(body); i += 100 {
		tw.Write([]byte(body[i:min(i+100, len(body))]))
	}
	if len(tw.b) != 64 || !strings.HasSuffix(body, string(tw.b)) {
		t.Fatalf("tail %q", tw.b)
	}
	if got := usageInTail(tw.b).toAudit(); got == nil || got.TotalTokens != 30 {
		t.Fatalf("usage %+v", got)
	}
	if usageInTail([]byte(`"usage" but no object`)) != nil {
		t.Fatal("usage read from nothing")
	}
}

func TestGatewayCountsUsageOfResponsesTooLargeToBuffer(t *testing.T) {
	f := newFixture(t, fixtureOpts{maxResponse: 64})
	res := f.do(f.fraud, "POST", "/v1/chat/completions", chatBody("gpt-4o", ""))
	if res.status != 200 || len(res.body) <= 64 {
		t.Fatalf("status %d body %s", res.status, res.body)
	}
	ev, full := f.lastEvent()
	if ev.Status != 200 {
		t.Fatalf("event %s", full)
	}
	e := f.rec.Events()
	if u := e[len(e)-1].Usage; u == nil || u.TotalTokens != modelgwtest.TotalTokens {
		t.Fatalf("usage %+v in %s", u, full)
	}
}
