package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
)

// holdStream tells a client that its tools/call waits for approval: when
// the call carries a progress token (params._meta.progressToken) and the
// client accepts text/event-stream, the gateway answers the POST as an SSE
// stream at once, sends notifications/progress with a message ("waiting
// for approval by group:oncall, approval ID") when the hold starts and
// after each long poll that finds it still pending, and then relays the
// call's answer into that stream: an upstream SSE answer as it is, a JSON
// one as one SSE event, a denial as one SSE event. Clients without a
// progress token get the plain answer when the hold ends.
type holdStream struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	token json.RawMessage
	n     int

	// The relayed answer: its headers and status as the writer of the
	// answer set them, and whether it is SSE (passed through) or JSON
	// (wrapped in one event as it streams).
	hdr     http.Header
	started bool
	sse     bool
	inData  bool
}

// newHoldStream starts the SSE answer of x's request, or returns nil when
// the client declared neither a progress token nor (elicit, its session)
// elicitation, or does not accept SSE.
func newHoldStream(w http.ResponseWriter, r *http.Request, m *mcpwire.Message, elicit bool) *holdStream {
	tok := progressToken(m.Params, "_meta")
	if tok == "null" {
		tok = ""
	}
	if (tok == "" && !elicit) || !strings.Contains(strings.Join(r.Header.Values("Accept"), ","), "text/event-stream") {
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	return &holdStream{w: w, rc: http.NewResponseController(w), token: json.RawMessage(tok), hdr: http.Header{}}
}

// progress sends one notifications/progress with message; progress counts
// up from 1, as the specification wants it to increase.
func (s *holdStream) progress(message string) {
	if len(s.token) == 0 {
		return
	}
	s.n++
	b, _ := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  struct {
			Token    json.RawMessage `json:"progressToken"`
			Progress int             `json:"progress"`
			Message  string          `json:"message"`
		} `json:"params"`
	}{JSONRPC: "2.0", Method: "notifications/progress", Params: struct {
		Token    json.RawMessage `json:"progressToken"`
		Progress int             `json:"progress"`
		Message  string          `json:"message"`
	}{s.token, s.n, message}})
	s.event(b)
}

// event sends one message of the gateway's own (b is one line of JSON).
func (s *holdStream) event(b []byte) {
	s.w.Write([]byte("event: message\ndata: "))
	s.w.Write(b)
	s.w.Write([]byte("\n\n"))
	s.rc.Flush()
}

// Header is the relayed answer's own header, which the client never sees
// (its head is already sent).
func (s *holdStream) Header() http.Header { return s.hdr }

func (s *holdStream) WriteHeader(status int) {
	if status < 200 || s.started {
		return
	}
	s.started = true
	s.sse = strings.HasPrefix(s.hdr.Get("Content-Type"), "text/event-stream")
}

func (s *holdStream) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	if s.sse {
		return s.w.Write(b)
	}
	if !s.inData {
		s.inData = true
		if _, err := s.w.Write([]byte("event: message\ndata: ")); err != nil {
			return 0, err
		}
	}
	// A line break between JSON tokens is white space, and none can be
	// inside a JSON string: as spaces, the message stays one data line.
	out := bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, b)
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

// FlushError flushes through to the client.
func (s *holdStream) FlushError() error { return s.rc.Flush() }

// Flush is http.Flusher, for code that asserts it.
func (s *holdStream) Flush() { s.rc.Flush() }

// Unwrap lets http.ResponseController reach the connection's deadlines.
func (s *holdStream) Unwrap() http.ResponseWriter { return s.w }

// finish ends a JSON answer's event.
func (s *holdStream) finish() {
	if s.inData {
		s.w.Write([]byte("\n\n"))
		s.inData = false
		s.rc.Flush()
	}
}
