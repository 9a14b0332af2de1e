package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const modelDoc = `{
  "groups": {"group:interns": ["agent:intern", "tag:intern"]},
  "grants": [
    // 0: chat models, small and not streamed for interns
    {"src": ["group:interns"], "dst": ["model:llm"], "models": ["gpt-4o-mini", "llama-*"],
     "when": "path != '/v1/chat/completions' || (args.max_tokens <= 256 && !(has(args.stream) && args.stream))"},
    // 1: everything for the research agent, plus two extra HTTP paths
    {"src": ["agent:research"], "dst": ["model:llm"], "models": ["*"],
     "paths": ["POST /v1/audio/*", "GET /v1/files", "!POST /v1/audio/secret"]},
    // 2: when sees the HTTP method
    {"src": ["agent:ops"], "dst": ["model:llm"], "paths": ["* /v1/batches*"], "when": "http_method == 'GET'"},
  ],
  "limits": [
    {"src": ["group:interns"], "dst": ["model:llm"], "rpm": 2, "tokens_per_day": 1000},
    {"src": ["agent:research"], "dst": ["model:llm"], "models": ["gpt-4*"], "tokens_per_day": 50000},
  ],
  "tests": [
    {"src": "agent:research", "dst": "model:llm", "allow": ["model gpt-4o", "path POST /v1/audio/speech"], "deny": ["path POST /v1/audio/secret", "path DELETE /v1/files"]},
  ],
}`

func modelReq(src Node, name string, args map[string]any) Request {
	return Request{Src: src, Dst: model("llm"), Action: ActionModel, Method: "/v1/chat/completions",
		Model: name, HTTPMethod: "POST", Path: "/v1/chat/completions", Args: args}
}

func pathReq(src Node, method, path string) Request {
	return Request{Src: src, Dst: model("llm"), Action: ActionPath, Method: path, HTTPMethod: method, Path: path}
}

func TestDecideModelsPathsAndWhen(t *testing.T) {
	p := mustCompile(t, modelDoc)
	intern, research, ops := agent("intern"), agent("research"), agent("ops")
	small := map[string]any{"max_tokens": 100}
	tests := []struct {
		name   string
		req    Request
		allow  bool
		reason reason.Code
	}{
		{"model in glob with when held", modelReq(intern, "llama-3-8b", small), true, reason.Allowed},
		{"model outside glob", modelReq(intern, "gpt-4o", small), false, reason.NotGranted},
		{"when on max_tokens", modelReq(intern, "gpt-4o-mini", map[string]any{"max_tokens": 4096}), false, reason.WhenFalse},
		{"when on stream", modelReq(intern, "gpt-4o-mini", map[string]any{"max_tokens": 10, "stream": true}), false, reason.WhenFalse},
		{"when missing max_tokens fails closed", modelReq(intern, "gpt-4o-mini", map[string]any{}), false, reason.WhenError},
		{"when sees the path", Request{Src: intern, Dst: model("llm"), Action: ActionModel, Method: "/v1/embeddings", Model: "llama-embed", HTTPMethod: "POST", Path: "/v1/embeddings"}, true, reason.Allowed},
		{"star model", modelReq(research, "anything", nil), true, reason.Allowed},
		{"path glob", pathReq(research, "POST", "/v1/audio/transcriptions"), true, reason.Allowed},
		{"path exact", pathReq(research, "GET", "/v1/files"), true, reason.Allowed},
		{"path wrong method", pathReq(research, "DELETE", "/v1/files"), false, reason.NotGranted},
		{"path excluded", pathReq(research, "POST", "/v1/audio/secret"), false, reason.NotGranted},
		{"path not named by any grant", pathReq(intern, "GET", "/v1/files"), false, reason.NotGranted},
		{"path with method star and when", pathReq(ops, "GET", "/v1/batches/b1"), true, reason.Allowed},
		{"path when false", pathReq(ops, "POST", "/v1/batches"), false, reason.WhenFalse},
		{"path without method is a bad request", pathReq(ops, "", "/v1/batches"), false, reason.BadRequest},
		{"models do not cover paths", pathReq(research, "POST", "/v1/chat/completions"), false, reason.NotGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.req)
			if d.Allow != tt.allow || d.Reason != tt.reason {
				t.Fatalf("Decide = %v %q, want %v %q", d.Allow, d.Reason, tt.allow, tt.reason)
			}
		})
	}
}

func TestLimitsApplyBySourceDestinationAndModel(t *testing.T) {
	p := mustCompile(t, modelDoc)
	tests := []struct {
		name  string
		src   Node
		dst   Node
		model string
		want  []int // limit indexes
	}{
		{"group member by name", agent("intern"), model("llm"), "llama-3", []int{0}},
		{"group member by tag", agent("new", "tag:intern"), model("llm"), "", []int{0}},
		{"models glob matches", agent("research"), model("llm"), "gpt-4o", []int{1}},
		{"models glob does not match", agent("research"), model("llm"), "llama-3", nil},
		{"request without a model skips model limits", agent("research"), model("llm"), "", nil},
		{"other destination", agent("intern"), model("other"), "llama-3", nil},
		{"unlisted source", agent("ops"), model("llm"), "gpt-4o", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Limits(tt.src, tt.dst, tt.model)
			if len(got) != len(tt.want) {
				t.Fatalf("Limits = %+v, want indexes %v", got, tt.want)
			}
			for i, l := range got {
				if l.Index != tt.want[i] || l.Key == "" {
					t.Fatalf("Limits[%d] = %+v, want index %d", i, l, tt.want[i])
				}
			}
		})
	}
	l := p.Limits(agent("intern"), model("llm"), "x")[0]
	if l.RPM != 2 || l.TokensPerDay != 1000 {
		t.Fatalf("limit numbers = %+v", l)
	}
	var nilPolicy *Policy
	if nilPolicy.Limits(agent("intern"), model("llm"), "x") != nil {
		t.Fatal("a nil policy has limits")
	}
}

func TestLimitKeySurvivesReorderingAndNewNumbers(t *testing.T) {
	a := mustCompile(t, `{"limits": [
	  {"src": ["agent:a"], "dst": ["model:m"], "rpm": 1},
	  {"src": ["agent:b"], "dst": ["model:m"], "models": ["x"], "rpm": 1}]}`)
	b := mustCompile(t, `{"limits": [
	  {"src": ["agent:b"], "dst": ["model:m"], "models": ["x"], "rpm": 5, "tokens_per_day": 9},
	  {"src": ["agent:a"], "dst": ["model:m"], "rpm": 3}]}`)
	c := mustCompile(t, `{"limits": [{"src": ["agent:a"], "dst": ["model:m"], "models": ["*"], "rpm": 1}]}`)
	ka := a.Limits(agent("a"), model("m"), "x")[0].Key
	kb := a.Limits(agent("b"), model("m"), "x")[0].Key
	if got := b.Limits(agent("a"), model("m"), "x")[0].Key; got != ka {
		t.Fatalf("key changed with the numbers: %s != %s", got, ka)
	}
	if got := b.Limits(agent("b"), model("m"), "x")[0].Key; got != kb {
		t.Fatalf("key changed with the order: %s != %s", got, kb)
	}
	if got := c.Limits(agent("a"), model("m"), "x")[0].Key; got == ka {
		t.Fatal("a limit with another models list kept the key")
	}
}

func TestCompileRejectsBadLimitsAndPaths(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown limit key", `{"limits": [{"src": ["*"], "dst": ["*"], "rpm": 1, "burst": 2}]}`, `1:52: limits[0]: unknown key "burst"`},
		{"missing numbers", `{"limits": [{"src": ["*"], "dst": ["*"]}]}`, `limits[0]: a limit needs "rpm", "tokens_per_day" or both`},
		{"missing dst", `{"limits": [{"src": ["*"], "rpm": 1}]}`, `limits[0]: a limit needs "src" and "dst"`},
		{"zero rpm", `{"limits": [{"src": ["*"], "dst": ["*"], "rpm": 0}]}`, `limits[0].rpm: want a positive integer`},
		{"fractional tokens", `{"limits": [{"src": ["*"], "dst": ["*"], "tokens_per_day": 1.5}]}`, `limits[0].tokens_per_day: want a positive integer`},
		{"string rpm", `{"limits": [{"src": ["*"], "dst": ["*"], "rpm": "60"}]}`, `limits[0].rpm: want a positive integer, got a string`},
		{"huge rpm", `{"limits": [{"src": ["*"], "dst": ["*"], "rpm": 99999999999999999999}]}`, `limits[0].rpm: want a positive integer up to`},
		{"undefined group in limit", `{"limits": [{"src": ["group:x"], "dst": ["*"], "rpm": 1}]}`, `limits[0].src[0]: undefined group "group:x"`},
		{"duplicate rpm", `{"limits": [{"src": ["*"], "dst": ["*"], "rpm": 1, "rpm": 2}]}`, `duplicate key "rpm"`},
		{"limits not a list", `{"limits": {}}`, `limits: want an array`},
		{"path without method", `{"grants": [{"src": ["*"], "dst": ["*"], "paths": ["/v1/files"]}]}`, `grants[0].paths[0]: path "/v1/files": want "METHOD /path"`},
		{"path lower-case method", `{"grants": [{"src": ["*"], "dst": ["*"], "paths": ["get /v1/files"]}]}`, `grants[0].paths[0]`},
		{"path not absolute", `{"grants": [{"src": ["*"], "dst": ["*"], "paths": ["GET v1/files"]}]}`, `grants[0].paths[0]`},
		{"test path expectation malformed", `{"tests": [{"src": "agent:a", "dst": "model:b", "allow": ["path /v1/files"]}]}`, `want "path METHOD /PATH"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile([]byte(tt.doc), "v1")
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestCompileCapsTheNumberOfLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"limits": [`)
	for i := 0; i <= MaxLimits; i++ {
		b.WriteString(`{"src": ["*"], "dst": ["*"], "rpm": 1},`)
	}
	b.WriteString(`]}`)
	_, err := Compile([]byte(b.String()), "v1")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("Compile error = %v, want too many limits", err)
	}
}

func TestVisibilityOfModelsFollowsGrants(t *testing.T) {
	p := mustCompile(t, modelDoc)
	vis := p.Visible(agent("intern"), Node{Kind: identity.KindModel, Name: "llm"})
	for name, want := range map[string]bool{"llama-3": true, "gpt-4o-mini": true, "gpt-4o": false} {
		if got := vis.Model(name); got != want {
			t.Errorf("Model(%q) = %v, want %v", name, got, want)
		}
	}
}
