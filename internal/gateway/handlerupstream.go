package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/agentmesh/agentmesh/internal/policy"
)

// HandlerUpstream is a Streamable HTTP MCP server in the gateway's own
// process (the MCP Go SDK's StreamableHTTPHandler, or any http.Handler):
// an allowed request is handed to Handler by a function call instead of
// over a connection. Everything else is HTTPUpstream's code path — the
// same admission, policy, list filtering, task binding, stream rechecks
// and audit events — so a server embedding the gateway (the public mesh
// package) enforces exactly what a gateway in front of it would.
//
// The request Handler sees carries what an HTTPUpstream's would (the
// allow-listed headers and the exact bytes that were evaluated), the Host
// the client used, and a context that ends when the client's request or
// session does. Handler runs on a goroutine of its own; the gateway waits
// for it to return before the request is done, so a handler that ignores
// its context and never returns holds the request (and Serve's return)
// forever. A panic in Handler is recovered and answered as an upstream
// failure (upstream_error), as a crashed HTTP upstream would be.
type HandlerUpstream struct {
	// Handler serves the MCP endpoint. Required.
	Handler http.Handler
}

func (HandlerUpstream) isUpstream() {}

// Caller is who an in-process handler's request comes from, as the
// gateway admitted it: Src is the audit trail's source (a SPIFFE ID, or a
// tailnet caller's name), Node what the policy matched.
type Caller struct {
	Src  string
	Node policy.Node
}

type callerKey struct{}

// CallerOf returns the caller of a request that a HandlerUpstream's
// handler serves (from its context); false for any other request, and
// for the DELETE the gateway sends itself to end a session it cut.
func CallerOf(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// inProcessURL is the URL the in-process upstream's requests are built
// with; nothing dials it.
const inProcessURL = "http://in-process" + mcpPath

func newHandlerUpstream(g *Gateway, u HandlerUpstream) (*httpUpstream, error) {
	if u.Handler == nil {
		return nil, fmt.Errorf("%w: HandlerUpstream.Handler is nil", ErrConfig)
	}
	h, err := newHTTPUpstream(g, HTTPUpstream{URL: inProcessURL, Transport: handlerTransport{u.Handler}})
	if err != nil {
		return nil, err
	}
	h.inProcess = true
	return h, nil
}

// handlerTransport is an http.RoundTripper that serves each request with
// an http.Handler in this process. The response's body is a pipe the
// handler writes into: it streams (SSE arrives event by event), and the
// handler blocks while the gateway has not read what it wrote, as it
// would on a connection with full buffers.
type handlerTransport struct{ h http.Handler }

var _ http.RoundTripper = handlerTransport{}

// errHandlerPanic ends the body of a response whose handler panicked.
var errHandlerPanic = errors.New("in-process upstream handler panicked")

// RoundTrip fails only for a handler that panicked before it answered
// (the gateway then answers upstream_error, as for an HTTP upstream that
// dropped the connection).
func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	sr := req.Clone(ctx)
	sr.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	sr.RequestURI = sr.URL.RequestURI()
	sr.Proto, sr.ProtoMajor, sr.ProtoMinor = "HTTP/1.1", 1, 1
	if sr.Body == nil {
		sr.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: make(http.Header), pw: pw, started: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				w.abort(fmt.Errorf("%w: %v", errHandlerPanic, p))
			}
		}()
		t.h.ServeHTTP(w, sr)
		w.finish()
	}()
	<-w.started
	if w.aborted {
		<-done
		cancel()
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, errHandlerPanic)
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		Body:          &handlerBody{pr: pr, cancel: cancel, done: done},
		ContentLength: -1,
		Request:       req,
	}, nil
}

// handlerBody is the body of an in-process response. Close stops the
// handler (its writes fail, its context ends) and waits until it has
// returned, so no handler outlives the request that started it.
type handlerBody struct {
	pr     *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

func (b *handlerBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *handlerBody) Close() error {
	b.pr.CloseWithError(io.ErrClosedPipe)
	b.cancel()
	<-b.done
	return nil
}

// pipeResponse is the http.ResponseWriter of an in-process handler.
type pipeResponse struct {
	header http.Header
	pw     *io.PipeWriter

	once    sync.Once
	started chan struct{} // closed once status and sent are set
	status  int
	sent    http.Header // header as it was when the response started
	aborted bool
}

var (
	_ http.ResponseWriter = (*pipeResponse)(nil)
	_ http.Flusher        = (*pipeResponse)(nil)
)

func (w *pipeResponse) Header() http.Header { return w.header }

// WriteHeader starts the response; 1xx codes and later calls are ignored,
// as a server does.
func (w *pipeResponse) WriteHeader(code int) {
	if code < 200 || code > 999 {
		return
	}
	w.start(code, nil)
}

func (w *pipeResponse) start(code int, first []byte) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		if first != nil && w.sent.Get("Content-Type") == "" && w.sent.Get("Transfer-Encoding") == "" {
			// As net/http's server does for a handler that set none.
			w.sent.Set("Content-Type", http.DetectContentType(first))
		}
		close(w.started)
	})
}

func (w *pipeResponse) Write(p []byte) (int, error) {
	w.start(http.StatusOK, p)
	return w.pw.Write(p)
}

// Flush starts the response; writes reach the reader as they happen.
func (w *pipeResponse) Flush() { w.start(http.StatusOK, nil) }

// finish ends the response of a handler that returned.
func (w *pipeResponse) finish() {
	w.start(http.StatusOK, nil)
	w.pw.Close()
}

// abort ends the response of a handler that panicked: before anything was
// sent it is a 502, after that the body ends in an error.
func (w *pipeResponse) abort(err error) {
	w.once.Do(func() {
		w.status = http.StatusBadGateway
		w.sent = make(http.Header)
		w.aborted = true
		close(w.started)
	})
	w.pw.CloseWithError(err)
}
