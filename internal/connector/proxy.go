package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// ServeListener serves Streamable HTTP at http://127.0.0.1:PORT/mcp on ln,
// which must be a loopback or Unix socket listener (see [Listen]), and
// forwards every request to the gateway as a streaming reverse proxy. auth
// binds the endpoint to its owner: on TCP every request must carry
// auth.Token as a bearer token unless auth.NoToken says otherwise (the zero
// Auth fails with loopback.ErrNoToken). Requests whose Host is not a
// loopback name with ln's port, or whose Origin is not a loopback origin,
// are refused with 403, those without the token with 401, both as a
// JSON-RPC error [CodeLocalRefused] that never reaches the gateway. It
// returns when ctx is done and the server has shut down (open streams are
// closed); it closes ln.
func (c *Connector) ServeListener(ctx context.Context, ln net.Listener, auth loopback.Auth) error {
	guard, err := loopback.NewGuard(ln.Addr(), auth)
	if err != nil {
		ln.Close()
		return fmt.Errorf("serve listener: %w", err)
	}
	p := &proxy{c: c, guard: guard}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		// What net/http has to say about a connection (a recovered panic
		// among it, with its stack) goes to the connector's log at debug
		// level, as for the gateway and the coordinator: never to the
		// agent's terminal. The demo's revocation step printed one: a
		// read of the local connection while the server read the next
		// request, as the gateway cut the revoked agent's connection; its
		// cause is not found yet.
		ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		// Handlers see ctx's values; httpserver.Run ends their contexts
		// (and so their gateway requests and streams) when it stops.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	err = httpserver.Run(ctx, srv, ln)
	c.transport.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("serve listener: %w", err)
	}
	return nil
}

// proxy is the loopback HTTP handler.
type proxy struct {
	c     *Connector
	guard *loopback.Guard
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if reason := p.guard.Check(r); reason != "" {
		p.refuse(w, r, reason)
		return
	}
	if r.URL.Path != "/mcp" {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}

	// The transport may still read the request body (its last read, to
	// see EOF after Content-Length bytes) when the gateway's response
	// headers arrive; an HTTP/1.1 server that is not told the handler
	// reads and writes at once closes the body as the headers go out,
	// that read fails and the transport cuts the response. Over HTTP/2 the
	// last read comes before the body is sent, over HTTP/1.1 (a gateway
	// without h2) after: the bench's go-chain hops lost one call in a
	// thousand this way.
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()
	body := &replayGuard{r: r.Body, length: r.ContentLength}
	defer body.finish(rc)
	stopWatch := func() {}
	if r.Method == http.MethodPost {
		// A GET is a stream that waits by design; a POST waits for an
		// answer. The method is the client's Mcp-Method header, if sent.
		method := r.Header.Get(mcpwire.HeaderMethod)
		if method == "" {
			method = "a request"
		}
		stopWatch = p.c.watchSlow(method)
	}
	ctx, traced, span := p.trace(r, body)
	resp, err := p.c.roundTrip(ctx, func(ctx context.Context, endpoint string) (*http.Request, error) {
		var b io.Reader = body
		switch {
		case traced != nil:
			b = traced.reader()
		case body.touched.Load():
			return nil, errNotReplayable
		case r.ContentLength == 0 && r.Method != http.MethodPost:
			b = nil
		}
		req, err := http.NewRequestWithContext(ctx, r.Method, endpoint, b)
		if err != nil {
			return nil, err
		}
		if b != nil {
			req.ContentLength = r.ContentLength
			if traced != nil {
				req.ContentLength = traced.length()
			}
			if req.ContentLength == 0 {
				req.Body = http.NoBody
			}
		}
		// The allow-list, and every other header of the protocol:
		// Authorization, Cookie, Proxy-* and hop-by-hop headers stay
		// here, since the node's mTLS identity is the only credential the
		// gateway sees. Last-Event-ID and the headers that mirror the body
		// pass on, because the gateway is the one that judges them.
		mcpwire.CopyRequestHeaders(req.Header, r.Header)
		mcpwire.CopyHeaders(req.Header, r.Header, mcpwire.HeaderLastEventID)
		for k, vv := range r.Header {
			if strings.HasPrefix(k, mcpwire.HeaderPrefix) {
				req.Header[k] = vv
			}
		}
		return req, nil
	})
	stopWatch()
	defer traceEnd(span, statusOf(resp), err)
	if err != nil {
		if r.Context().Err() == nil {
			p.c.log.Warn("gateway unreachable", "method", r.Method, "err", err)
			// The body was streamed, not parsed: the error goes with a
			// null id, and HTTP 502 tells clients that read no body.
			b := unreachable(nil, "the connection to the gateway failed", err)
			w.Header().Set("Content-Type", mcpwire.ContentTypeJSON)
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.WriteHeader(http.StatusBadGateway)
			w.Write(b)
		}
		return
	}
	defer func() {
		// Over HTTP/2, closing the response waits for the request body's
		// copy to end, which may wait for the agent: end the body's reads
		// first.
		body.finish(rc)
		resp.Body.Close()
	}()

	mcpwire.CopyResponseHeaders(w.Header(), resp.Header)
	if resp.ContentLength >= 0 && mediaType(resp.Header.Get("Content-Type")) != mcpwire.ContentTypeSSE {
		w.Header().Set("Content-Length", fmt.Sprint(resp.ContentLength))
	}
	w.WriteHeader(resp.StatusCode)
	if mediaType(resp.Header.Get("Content-Type")) == mcpwire.ContentTypeSSE {
		streamFlushing(w, resp.Body)
		return
	}
	bp := copyBufPool.Get().(*[]byte)
	_, _ = io.CopyBuffer(w, resp.Body, *bp)
	copyBufPool.Put(bp)
}

// refuse answers a request the local endpoint does not serve with a
// JSON-RPC error carrying the reason code; it never reaches the gateway.
func (p *proxy) refuse(w http.ResponseWriter, r *http.Request, why reason.Code) {
	status, msg := http.StatusForbidden, "local endpoint: Host or Origin is not local"
	if why == reason.LocalAuth {
		status, msg = http.StatusUnauthorized, "local endpoint: send Authorization: Bearer TOKEN with this endpoint's token"
		w.Header().Set("WWW-Authenticate", loopback.Challenge)
	}
	p.c.log.Warn("local endpoint refused a request", "reason", why, "method", r.Method, "remote", r.RemoteAddr)
	p.c.metrics.RefusedFor(why)
	b := errorResponse(nil, CodeLocalRefused, msg, map[string]reason.Code{"reason": why})
	w.Header().Set("Content-Type", mcpwire.ContentTypeJSON)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// streamFlushing copies an SSE body, flushing after every read so that each
// event reaches the agent as soon as the gateway sent it. It starts with a
// small buffer, since a session's standalone stream is open for as long as
// the session and mostly idle, and takes a large one from the pool once a
// read fills the small one (a big result arriving).
func streamFlushing(w http.ResponseWriter, body io.Reader) {
	rc := http.NewResponseController(w)
	_ = rc.Flush() // send the headers now: the first event may take a while
	buf := make([]byte, 4<<10)
	var big *[]byte
	defer func() {
		if big != nil {
			copyBufPool.Put(big)
		}
	}()
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if ferr := rc.Flush(); ferr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		if n == len(buf) && big == nil {
			big = copyBufPool.Get().(*[]byte)
			buf = *big
		}
	}
}

// replayGuard is a request body that records whether it was read, so a
// request whose body was never touched can be retried with the same body
// without buffering it. finish closes it, before the handler returns.
//
// It also ends the body's reads when the handler returns (finish). The
// transport may still be copying the body to the gateway after RoundTrip
// returned, when the gateway answered before the whole body was sent (a
// refusal: revoked, not granted); as soon as the handler returns, the
// server reads the connection for the next request, and a read of the
// body at the same time makes net/http panic ("invalid concurrent
// Body.Read call", recovered and logged with a stack trace, the
// connection closed): the demo's revocation step showed it.
type replayGuard struct {
	r io.ReadCloser
	// length is the request's Content-Length (-1: unknown).
	length  int64
	touched atomic.Bool

	mu   sync.Mutex // held by a read in progress
	done bool       // the handler has returned: reads end
	eof  bool       // a read reached the body's end
}

// errHandlerDone ends a read of a body whose handler has returned.
var errHandlerDone = errors.New("the request was answered")

func (g *replayGuard) Read(p []byte) (int, error) {
	g.touched.Store(true)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return 0, errHandlerDone
	}
	n, err := g.r.Read(p)
	if err == io.EOF {
		g.eof = true
	}
	return n, err
}

// finish waits for a read in progress to end, making it end at once if it
// waits for the client (a read deadline in the past; the server sets its
// own again before it reads the next request), and ends every later read.
//
// It then closes the request body while the handler still runs. A body
// left unread (the gateway was down, or answered before it took the body)
// would otherwise be drained by the server after the handler returns; in
// full-duplex mode that drain starts the server's background read of the
// connection after the server has stopped it, and the server's next read
// panics ("invalid concurrent Body.Read call", golang/go#68560) and drops
// the agent's keep-alive connection. Drained here, the background read
// starts now and the server stops it as it finishes the request.
//
// A body the agent has not sent whole (the gateway answered first) is not
// drained: closing it would wait for bytes the agent may never send, with
// the answer still in the server's buffer. The read deadline in the past
// ends that drain at once (and the connection with it: its next bytes
// would be the rest of this body).
func (g *replayGuard) finish(rc *http.ResponseController) {
	deadline := false
	if !g.mu.TryLock() {
		_ = rc.SetReadDeadline(time.Now())
		deadline = true
		g.mu.Lock()
	}
	g.done = true
	if !g.eof && g.length != 0 && !deadline {
		_ = rc.SetReadDeadline(time.Now())
	}
	g.mu.Unlock()
	_ = g.r.Close()
}
