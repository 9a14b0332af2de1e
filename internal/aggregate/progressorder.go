package aggregate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Progress before the answer. The SDK's client session reads a
// service's messages in order on one goroutine (jsonrpc2's readIncoming):
// a notification is queued for its handler, which runs later on another
// goroutine, while a response is handed to the waiting call at once. So
// a call can return while progress the service sent before its answer is
// still queued; forwarded after the aggregated call answered, it would
// find the client's request stream ended (over HTTP) and be lost.
//
// The ordering point is the read: everything read before the response
// was read before the call returned. The aggregator counts, as each
// message is read from a service, the progress notifications for each
// of its own tokens (seen), and the progress handler counts those it has
// forwarded (sent); a call's handler, once the service answered, waits
// until sent catches up with seen before it returns its result, so the
// client gets every progress notification the service sent before its
// answer, then the answer. The SDK offers no hook at the read, so:
//
//   - a Streamable HTTP transport (the gateways') is given an HTTP client
//     whose response bodies are scanned as the SDK reads them (an SSE
//     event's bytes pass the scanner before the SDK decodes that event);
//   - any other transport's connection is wrapped, and its Read
//     inspected. (The SDK's Streamable HTTP client connection cannot be
//     wrapped: it learns of its session through an unexported method.)
//
// The wait is bounded (progressFlushTimeout) and ends with the client's
// request, in case the SDK drops a notification counted here (one it
// cannot decode ends the session anyway).

// progressFlushTimeout bounds how long a call's answer waits for the
// progress read before it to be forwarded.
const progressFlushTimeout = 5 * time.Second

// maxScannedEvent is the longest SSE event scanned for progress; a
// longer one (no progress notification is that long) is passed on
// unscanned.
const maxScannedEvent = 1 << 20

// countingTransport returns tr with every progress notification it reads
// counted (seen) before the SDK handles it.
func (p *progressRoutes) countingTransport(tr mcp.Transport) mcp.Transport {
	switch t := tr.(type) {
	case nil:
		return nil
	case *mcp.StreamableClientTransport:
		c := *t
		hc := http.DefaultClient
		if t.HTTPClient != nil {
			hc = t.HTTPClient
		}
		h := *hc
		rt := h.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		h.Transport = countingRoundTripper{next: rt, p: p}
		c.HTTPClient = &h
		return &c
	default:
		return countingConnTransport{Transport: tr, p: p}
	}
}

type countingConnTransport struct {
	mcp.Transport
	p *progressRoutes
}

func (t countingConnTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.Transport.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return countingConn{Connection: c, p: t.p}, nil
}

type countingConn struct {
	mcp.Connection
	p *progressRoutes
}

func (c countingConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	msg, err := c.Connection.Read(ctx)
	if err == nil {
		c.p.read(msg)
	}
	return msg, err
}

// read counts msg if it is a progress notification for a route.
func (p *progressRoutes) read(msg jsonrpc.Message) {
	req, ok := msg.(*jsonrpc.Request)
	if !ok || req.IsCall() || req.Method != "notifications/progress" || len(req.Params) == 0 {
		return
	}
	var params mcp.ProgressNotificationParams
	if json.Unmarshal(req.Params, &params) != nil {
		return
	}
	if up, ok := params.ProgressToken.(string); ok {
		p.seen(up)
	}
}

type countingRoundTripper struct {
	next http.RoundTripper
	p    *progressRoutes
}

func (rt countingRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(strings.TrimSpace(ct), "text/event-stream") {
		resp.Body = &sseCounter{ReadCloser: resp.Body, p: rt.p}
	}
	return resp, err
}

// sseCounter passes an SSE body on unchanged, counting the progress
// notifications in its events as their bytes go by, until the stream's
// response (the SDK reads no further events on a request's stream).
type sseCounter struct {
	io.ReadCloser
	p *progressRoutes

	line     []byte
	long     bool // the current event is too long to scan
	dropped  bool // so is the current line: its bytes were dropped
	name     string
	data     []byte
	hasData  bool
	answered bool
}

func (s *sseCounter) Read(b []byte) (int, error) {
	n, err := s.ReadCloser.Read(b)
	s.scan(b[:n])
	if errors.Is(err, io.EOF) {
		s.endLine()
		s.dispatch()
	}
	return n, err
}

func (s *sseCounter) scan(b []byte) {
	for len(b) > 0 && !s.answered {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			s.add(b)
			return
		}
		s.add(b[:i])
		b = b[i+1:]
		s.endLine()
	}
}

func (s *sseCounter) add(b []byte) {
	if s.dropped || len(s.line)+len(s.data)+len(b) > maxScannedEvent {
		s.long, s.dropped, s.line = true, true, s.line[:0]
		return
	}
	s.line = append(s.line, b...)
}

// endLine handles one complete line, as the SDK's SSE scanner does.
func (s *sseCounter) endLine() {
	line := bytes.TrimRight(s.line, "\r")
	s.line = s.line[:0]
	if s.dropped { // a line too long to keep, not an empty one
		s.dropped = false
		return
	}
	if len(line) == 0 {
		s.dispatch()
		return
	}
	if s.long {
		return
	}
	field, value, ok := bytes.Cut(line, []byte{':'})
	if !ok {
		return
	}
	switch string(field) {
	case "event":
		s.name = strings.TrimSpace(string(value))
	case "data":
		if s.hasData {
			s.data = append(s.data, '\n')
		}
		s.data, s.hasData = append(s.data, bytes.TrimSpace(value)...), true
	}
}

// dispatch ends the current event, counting it if it is a progress
// notification.
func (s *sseCounter) dispatch() {
	data, name, long := s.data, s.name, s.long
	s.data, s.name, s.long, s.hasData = s.data[:0], "", false, false
	if long || len(data) == 0 || (name != "" && name != "message") || s.answered {
		return
	}
	msg, err := jsonrpc.DecodeMessage(data)
	if err != nil {
		return
	}
	if _, ok := msg.(*jsonrpc.Response); ok {
		s.answered = true
		return
	}
	s.p.read(msg)
}

// transport is Config.Transport's transport to svc's gateway, with its
// progress notifications counted as they are read.
func (a *Aggregator) transport(svc Service) (mcp.Transport, error) {
	tr, err := a.cfg.Transport(svc)
	if err != nil {
		return nil, err
	}
	return a.progress.countingTransport(tr), nil
}
