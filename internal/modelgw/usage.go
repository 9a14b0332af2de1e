package modelgw

import (
	"bytes"
	"encoding/json"

	"github.com/agentmesh/agentmesh/internal/audit"
)

// usageJSON is the usage object of Chat Completions, Completions and
// Embeddings (prompt/completion tokens) and of Responses (input/output).
type usageJSON struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	InputTokens      int64 `json:"input_tokens"`
	OutputTokens     int64 `json:"output_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func (u *usageJSON) toAudit() *audit.Usage {
	if u == nil {
		return nil
	}
	a := &audit.Usage{
		PromptTokens:     max(u.PromptTokens, u.InputTokens, 0),
		CompletionTokens: max(u.CompletionTokens, u.OutputTokens, 0),
		TotalTokens:      max(u.TotalTokens, 0),
	}
	if a.TotalTokens == 0 {
		a.TotalTokens = a.PromptTokens + a.CompletionTokens
	}
	return a
}

// usageOf reads the usage of one JSON document: a top-level "usage", or the
// "usage" of a top-level "response" (the Responses API's completed event).
func usageOf(b []byte) *usageJSON {
	if !bytes.Contains(b, []byte(`"usage"`)) {
		return nil
	}
	var doc struct {
		Usage    *usageJSON `json:"usage"`
		Response *struct {
			Usage *usageJSON `json:"usage"`
		} `json:"response"`
	}
	if json.Unmarshal(b, &doc) != nil {
		return nil
	}
	if doc.Usage != nil {
		return doc.Usage
	}
	if doc.Response != nil {
		return doc.Response.Usage
	}
	return nil
}

// maxSSELine bounds the part of one SSE line kept for usage parsing; longer
// lines pass through but are not parsed.
const maxSSELine = 1 << 20

// sseUsage watches a Server-Sent Events stream go by and keeps the last
// usage object seen in a data line. It never changes the stream.
type sseUsage struct {
	line    []byte
	skip    bool // the current line is over maxSSELine
	last    *usageJSON
	sawData bool
}

func (s *sseUsage) Write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !s.skip {
			if len(s.line)+len(chunk) > maxSSELine {
				s.skip, s.line = true, s.line[:0]
			} else {
				s.line = append(s.line, chunk...)
			}
		}
		if i < 0 {
			return
		}
		if !s.skip {
			s.endLine()
		}
		s.skip, s.line = false, s.line[:0]
		p = p[i+1:]
	}
}

func (s *sseUsage) endLine() {
	data, ok := bytes.CutPrefix(bytes.TrimRight(s.line, "\r"), []byte("data:"))
	if !ok {
		return
	}
	s.sawData = true
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return
	}
	if u := usageOf(data); u != nil {
		s.last = u
	}
}

// maxUsageTail is how much of the end of a response too large to parse is
// kept to find its usage.
const maxUsageTail = 64 << 10

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	b   []byte
	max int
}

func (t *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.b = append(t.b[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.b) + len(p) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

// usageInTail reads the usage object that follows the last "usage" key in
// the end of a JSON document, or nil.
func usageInTail(tail []byte) *usageJSON {
	i := bytes.LastIndex(tail, []byte(`"usage"`))
	if i < 0 {
		return nil
	}
	rest := bytes.TrimLeft(tail[i+len(`"usage"`):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return nil
	}
	var u *usageJSON
	if json.NewDecoder(bytes.NewReader(rest[1:])).Decode(&u) != nil {
		return nil
	}
	return u
}
