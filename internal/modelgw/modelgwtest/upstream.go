// Package modelgwtest is a small OpenAI-compatible model server for tests:
// GET /v1/models, POST /v1/chat/completions (plain and streamed as SSE, with
// usage in the last chunk when stream_options.include_usage is set) and
// POST /v1/embeddings. It answers deterministically and records what it
// received, so tests can check what the gateway forwarded.
package modelgwtest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
)

// Usage is the token usage every completion reports: PromptTokens 7,
// CompletionTokens 5, TotalTokens 12. Embeddings report 3 prompt tokens.
const (
	PromptTokens     = 7
	CompletionTokens = 5
	TotalTokens      = PromptTokens + CompletionTokens
	EmbeddingTokens  = 3
)

// Embedding is the vector every embedding request gets: as JSON numbers,
// or with encoding_format "base64" as base64 of its little-endian float32s
// (what the openai SDKs ask for by default).
var Embedding = []float32{0.1, 0.2, 0.3}

func embeddingBase64() string {
	b := make([]byte, 0, 4*len(Embedding))
	for _, f := range Embedding {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// StreamChunks are the content pieces of a streamed completion, in order;
// the plain completion's content is their concatenation.
var StreamChunks = []string{"Hello", " from", " the mesh"}

// Server is the fake upstream. Its zero value serves the models
// "gpt-4o", "gpt-4o-mini" and "text-embedding-3-small".
type Server struct {
	// Models is the model list; nil is the default list.
	Models []string
	// Gate, when set, is received from before each streamed chunk after
	// the first, so a test can prove the first chunk arrived before the
	// second was sent. A stream whose client goes away stops waiting.
	Gate chan struct{}

	mu       sync.Mutex
	received []Received
}

// Received is one request the server got.
type Received struct {
	Method, Path  string
	Authorization string
	Header        http.Header
	Body          []byte
}

// Received returns a copy of the requests received so far.
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.received...)
}

func (s *Server) models() []string {
	if s.Models == nil {
		return []string{"gpt-4o", "gpt-4o-mini", "text-embedding-3-small"}
	}
	return s.Models
}

// ServeHTTP implements the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.received = append(s.received, Received{Method: r.Method, Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), Header: r.Header.Clone(), Body: body})
	s.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/models":
		data := make([]map[string]any, 0, len(s.models()))
		for _, m := range s.models() {
			data = append(data, map[string]any{"id": m, "object": "model", "created": 1700000000, "owned_by": "test"})
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		s.chat(w, r, body)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/embeddings":
		var req struct {
			Model          string `json:"model"`
			EncodingFormat string `json:"encoding_format"`
		}
		if json.Unmarshal(body, &req) != nil {
			writeJSON(w, http.StatusBadRequest, errBody("bad json"))
			return
		}
		var emb any = Embedding
		if req.EncodingFormat == "base64" {
			emb = embeddingBase64()
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"object": "list", "model": req.Model,
			"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": emb}},
			"usage": map[string]any{"prompt_tokens": EmbeddingTokens, "total_tokens": EmbeddingTokens},
		})
	default:
		writeJSON(w, http.StatusNotFound, errBody("no route "+r.Method+" "+r.URL.Path))
	}
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if json.Unmarshal(body, &req) != nil || req.Model == "" {
		writeJSON(w, http.StatusBadRequest, errBody("bad request"))
		return
	}
	usage := map[string]any{"prompt_tokens": PromptTokens, "completion_tokens": CompletionTokens, "total_tokens": TotalTokens}
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": strings.Join(StreamChunks, "")}}},
			"usage": usage,
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	chunk := func(delta map[string]any, finish any) {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
			"model": req.Model, "choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
		fmt.Fprintf(w, "data: %s\n\n", b)
		flush()
	}
	for i, c := range StreamChunks {
		if i > 0 && s.Gate != nil {
			select {
			case <-s.Gate:
			case <-r.Context().Done():
				return // the client (the gateway) went away
			}
		}
		d := map[string]any{"content": c}
		if i == 0 {
			d["role"] = "assistant"
		}
		chunk(d, nil)
	}
	chunk(map[string]any{}, "stop")
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
			"model": req.Model, "choices": []any{}, "usage": usage})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	flush()
}

func errBody(msg string) map[string]any {
	return map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
