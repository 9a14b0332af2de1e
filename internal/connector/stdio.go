package connector

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/sse"
)

// deleteTimeout bounds the DELETE that ends a session when the agent leaves.
const deleteTimeout = 5 * time.Second

// ServeStdio serves the MCP stdio transport: newline-delimited JSON-RPC
// messages from the agent on r, messages for the agent on w (one per line,
// never interleaved). Each message is forwarded to the gateway as a
// Streamable HTTP client would; requests are sent concurrently.
//
// ServeStdio returns nil when r reaches EOF, after the requests in flight have
// been answered (or ctx is done), and ctx's error when ctx is done first; in
// both cases it has ended the gateway session. Only a read from r that is
// blocked when ctx ends may outlive the call (unless r supports read
// deadlines): that goroutine exits when r returns.
func (c *Connector) ServeStdio(ctx context.Context, r io.Reader, w io.Writer) error {
	sctx, cancel := context.WithCancelCause(ctx)
	s := &stdioSession{
		c:     c,
		ctx:   sctx,
		stop:  cancel,
		out:   &lineWriter{w: w},
		calls: make(map[string]context.CancelFunc),
	}
	s.out.onErr = func(err error) { cancel(fmt.Errorf("write to agent: %w", err)) }
	defer c.transport.CloseIdleConnections()
	return s.serve(ctx, r)
}

// stdioSession is one agent's stdio connection and its gateway session.
type stdioSession struct {
	c    *Connector
	ctx  context.Context // cancelled when serving stops
	stop context.CancelCauseFunc
	out  *lineWriter

	wg      sync.WaitGroup // every goroutine the session starts, except the reader
	pending sync.WaitGroup // requests not yet answered (excluding listens)

	mu          sync.Mutex
	sessionID   string // legacy sessions: from the initialize response
	expired     bool   // the gateway answered 404 for the session
	negotiated  string // from the initialize result
	lastVersion string // from the last request _meta (stateless protocol)
	getStarted  bool
	calls       map[string]context.CancelFunc // in-flight requests by id
}

// lineWriter writes whole lines to the agent, one at a time.
type lineWriter struct {
	mu    sync.Mutex
	w     io.Writer
	buf   []byte
	err   error
	onErr func(error)
}

func (lw *lineWriter) writeLine(b []byte) error {
	b = oneLine(b)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.err != nil {
		return lw.err
	}
	lw.buf = append(append(lw.buf[:0], b...), '\n')
	if _, err := lw.w.Write(lw.buf); err != nil {
		lw.err = err
		if lw.onErr != nil {
			lw.onErr(err)
		}
		return err
	}
	if cap(lw.buf) > 1<<20 {
		lw.buf = nil // do not pin a huge buffer
	}
	return nil
}

func (s *stdioSession) serve(parent context.Context, r io.Reader) error {
	lines := make(chan []byte)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		readErr <- s.readLines(r, lines)
	}()

	var err error
loop:
	for {
		select {
		case line := <-lines:
			s.dispatch(line)
		case err = <-readErr:
			break loop
		case <-s.ctx.Done():
			break loop
		}
	}
	if err == io.EOF {
		err = nil
	}

	if s.ctx.Err() == nil && err == nil {
		// EOF: let the requests in flight finish, unless ctx ends first.
		drained := make(chan struct{})
		go func() { s.pending.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-s.ctx.Done():
		}
		s.stop(nil)
		<-drained // every request goroutine ends once s.ctx is done
	}
	s.stop(nil)
	s.wg.Wait()
	s.deleteSession(parent)

	// Unblock the reader if r supports it; otherwise it exits when r does.
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		if d.SetReadDeadline(time.Now()) == nil {
			<-readerDone
		}
	}

	if err != nil {
		return fmt.Errorf("serve stdio: %w", err)
	}
	if cause := context.Cause(s.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("serve stdio: %w", cause)
	}
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("serve stdio: %w", perr)
	}
	return nil
}

// readLines sends each non-empty line of r on lines until r ends or the
// session stops.
func (s *stdioSession) readLines(r io.Reader, lines chan<- []byte) error {
	br := bufio.NewReaderSize(r, 64<<10)
	max := s.c.maxMsg
	var acc []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(acc)+len(frag) > max {
			return fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, max)
		}
		if err == bufio.ErrBufferFull {
			acc = append(acc, frag...)
			continue
		}
		line := append(acc, frag...) // a copy: frag is reused by br
		acc = nil
		if t := bytes.TrimSpace(line); len(t) > 0 {
			select {
			case lines <- t:
			case <-s.ctx.Done():
				return s.ctx.Err()
			}
		}
		if err != nil {
			if err == io.EOF {
				return io.EOF
			}
			return fmt.Errorf("read from agent: %w", err)
		}
	}
}

// dispatch forwards one message from the agent. It returns once the message
// has been written to the gateway (or failed), so the gateway sees messages
// in the order the agent sent them, while their round trips overlap.
func (s *stdioSession) dispatch(line []byte) {
	m := parseMessage(line)
	sent := make(chan struct{})
	var once sync.Once
	markSent := func() { once.Do(func() { close(sent) }) }

	s.wg.Add(1)
	switch m.kind {
	case kindRequest:
		listen := m.method == "subscriptions/listen"
		if !listen {
			s.pending.Add(1)
		}
		ctx, cancel := context.WithCancel(s.ctx)
		key := idKey(m.id)
		s.mu.Lock()
		s.calls[key] = cancel
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.calls, key)
				s.mu.Unlock()
				cancel()
			}()
			s.call(ctx, &m, !listen, markSent)
		}()
	default:
		if m.kind == kindNotification && m.method == "notifications/cancelled" {
			s.cancelCall(&m)
		}
		go func() {
			defer s.wg.Done()
			s.post(&m, markSent)
		}()
	}
	select {
	case <-sent:
	case <-s.ctx.Done():
	}
}

// cancelCall aborts the HTTP request of a call the agent cancelled, when the
// protocol has no session to carry the cancellation (stateless protocol): the
// gateway sees its request end. With sessions the forwarded notification
// does the job.
func (s *stdioSession) cancelCall(m *message) {
	version := m.version
	s.mu.Lock()
	if version == "" {
		version = s.versionLocked()
	}
	cancel := s.calls[idKey(m.cancelID)]
	s.mu.Unlock()
	if cancel != nil && version >= mcpwire.VersionStateless {
		cancel()
	}
}

func (s *stdioSession) versionLocked() string {
	if s.negotiated != "" {
		return s.negotiated
	}
	return s.lastVersion
}

// newPOST returns a builder of the POST that carries m.
func (s *stdioSession) newPOST(m *message, onWritten func()) func(ctx context.Context, endpoint string) (*http.Request, error) {
	s.mu.Lock()
	if m.version != "" {
		s.lastVersion = m.version
	}
	negotiated := s.versionLocked()
	sessionID := s.sessionID
	s.mu.Unlock()
	if m.method == "initialize" {
		// A new session: never send the previous one's headers.
		negotiated, sessionID = "", ""
	}
	version := m.version
	if version == "" {
		version = negotiated
	}
	return func(ctx context.Context, endpoint string) (*http.Request, error) {
		body := s.c.withTraceMeta(ctx, m, version)
		ctx = withWroteRequest(ctx, onWritten)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", mcpwire.ContentTypeJSON)
		req.Header.Set("Accept", mcpwire.AcceptPOST)
		setMCPHeaders(req.Header, m, negotiated, sessionID)
		return req, nil
	}
}

// post forwards a notification or a response (the agent's answer to a
// server request). Nothing is sent back to the agent unless the gateway
// answers with a message.
//
// Unlike a request, the next message waits until the gateway has answered
// this one (202 for a notification): the gateway may handle concurrent
// POSTs in any order, and a client that sends notifications/initialized
// followed at once by tools/list relies on the server seeing them in that
// order.
func (s *stdioSession) post(m *message, markSent func()) {
	defer markSent()
	ctx, span := s.c.traceStart(s.ctx, nil, m, http.MethodPost)
	resp, err := s.c.roundTrip(ctx, s.newPOST(m, func() {}))
	defer traceEnd(span, statusOf(resp), err)
	if err != nil {
		if s.ctx.Err() == nil {
			s.c.log.Warn("forward message to gateway", "method", m.method, "err", err)
		}
		return
	}
	markSent()
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		s.noteSessionGone(resp)
		s.c.log.Warn("gateway refused message", "method", m.method, "status", resp.StatusCode, "text", shortText(body))
		return
	}
	if m.method == "notifications/initialized" {
		s.startGET()
	}
	switch mediaType(resp.Header.Get("Content-Type")) {
	case mcpwire.ContentTypeJSON:
		// A reply to a batch or to something the gateway could not parse.
		body, err := readLimited(resp.Body, s.c.maxMsg)
		if err == nil && len(bytes.TrimSpace(body)) > 0 {
			_ = s.out.writeLine(body)
		}
	case mcpwire.ContentTypeSSE:
		_, _ = s.relaySSE(resp.Body, "", nil)
	}
}

// call forwards a request and relays everything the gateway sends back for
// it until the response arrives and the stream ends. countPending says
// whether the request is in s.pending.
func (s *stdioSession) call(ctx context.Context, m *message, countPending bool, markSent func()) {
	defer markSent()
	rp := &reply{out: s.out}
	if countPending {
		rp.pending = &s.pending
	}
	// Cancelled by the agent or by shutdown: nobody waits for an answer
	// any more.
	defer rp.release()

	stopWatch := s.c.watchSlow(m.method)
	tctx, span := s.c.traceStart(ctx, nil, m, http.MethodPost)
	resp, err := s.c.roundTrip(tctx, s.newPOST(m, markSent))
	// The span covers the whole answer, streamed or not.
	defer traceEnd(span, statusOf(resp), err)
	stopWatch()
	markSent()
	if err != nil {
		if ctx.Err() == nil {
			s.c.log.Warn("gateway unreachable", "method", m.method, "err", err)
			rp.send(unreachable(m.id, "the connection to the gateway failed", err))
		}
		return
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		rp.send(s.httpError(m, resp))
		return
	}
	if m.method == "initialize" {
		s.noteSession(resp)
	}
	s.relayAnswer(ctx, m, resp, rp)
}

// reply writes the answer to one request to the agent.
type reply struct {
	out      *lineWriter
	pending  *sync.WaitGroup // the request's place in stdioSession.pending; nil if not counted
	answered bool
}

// send writes line to the agent. The first answer releases the request's
// place in pending only once written, so that a drain at EOF never ends
// before the agent has its answer.
func (rp *reply) send(line []byte) {
	_ = rp.out.writeLine(line)
	rp.release()
}

// release gives up the request's place in pending, once.
func (rp *reply) release() {
	if rp.answered {
		return
	}
	rp.answered = true
	if rp.pending != nil {
		rp.pending.Done()
	}
}

// noteSession records the session an initialize response opened (none, for
// a gateway without sessions), before the answer reaches the agent, whose
// next message must carry it.
func (s *stdioSession) noteSession(resp *http.Response) {
	s.mu.Lock()
	s.sessionID = resp.Header.Get(mcpwire.HeaderSessionID)
	s.expired = false
	s.mu.Unlock()
}

// relayAnswer relays the gateway's successful answer to m: one JSON
// message, or an event stream that carries the response among what else
// the server sends while it works. An initialize result is noted before
// the agent sees it, since the agent's next message (initialized) is sent
// with the version it negotiated.
func (s *stdioSession) relayAnswer(ctx context.Context, m *message, resp *http.Response, rp *reply) {
	switch mediaType(resp.Header.Get("Content-Type")) {
	case mcpwire.ContentTypeJSON:
		body, err := readLimited(resp.Body, s.c.maxMsg)
		if err != nil {
			if ctx.Err() == nil {
				rp.send(unreachable(m.id, "the connection to the gateway broke before its answer", nil))
			}
			return
		}
		if m.method == "initialize" {
			s.noteInitialize(body)
		}
		rp.send(body)
	case mcpwire.ContentTypeSSE:
		_, err := s.relaySSE(resp.Body, idKey(m.id), func(data []byte) {
			if m.method == "initialize" {
				s.noteInitialize(data)
			}
			rp.send(data)
		})
		if !rp.answered && ctx.Err() == nil {
			s.c.log.Warn("gateway stream ended without response", "method", m.method, "err", err)
			rp.send(unreachable(m.id, "the gateway's stream ended without an answer", nil))
		}
	default:
		rp.send(errorResponse(m.id, CodeGatewayHTTPError,
			fmt.Sprintf("gateway: HTTP %d with unexpected content type", resp.StatusCode),
			map[string]int{"status": resp.StatusCode}))
	}
}

// relaySSE writes every message event of body to the agent, in order. The
// first response whose id is answerKey (if not "") goes to onAnswer instead,
// which writes it. The stream is read to its end, so that the connection can
// be reused; it returns the last event id seen.
func (s *stdioSession) relaySSE(body io.Reader, answerKey string, onAnswer func([]byte)) (lastEventID string, err error) {
	sr := sse.NewReader(body, s.c.maxMsg)
	for {
		ev, err := sr.Next()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return lastEventID, err
		}
		if ev.HasID {
			lastEventID = ev.ID
		}
		if len(ev.Data) == 0 || (ev.Name != "" && ev.Name != "message") {
			continue
		}
		if answerKey != "" {
			if r := parseMessage(ev.Data); r.kind == kindResponse && idKey(r.id) == answerKey {
				answerKey = ""
				onAnswer(ev.Data)
				continue
			}
		}
		if err := s.out.writeLine(ev.Data); err != nil {
			return lastEventID, err
		}
	}
}

// httpError turns an HTTP error from the gateway into the JSON-RPC response
// for m. A JSON-RPC error in the body (a policy denial, a protocol error) is
// passed through unchanged.
func (s *stdioSession) httpError(m *message, resp *http.Response) []byte {
	body, _ := readLimited(resp.Body, 64<<10)
	if r := parseMessage(body); r.kind == kindResponse && r.hasError {
		if idKey(r.id) == idKey(m.id) {
			return body
		}
		if len(r.id) == 0 || bytes.Equal(r.id, []byte("null")) {
			var env envelope
			if json.Unmarshal(body, &env) == nil {
				if b := withID(env.Error, m.id); b != nil {
					return b
				}
			}
		}
	}
	gone := s.noteSessionGone(resp)
	msg := fmt.Sprintf("gateway: HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if gone {
		msg = "gateway: session expired (HTTP 404); reconnect to start a new session"
	} else if t := shortText(body); t != "" {
		msg += ": " + t
	}
	s.c.log.Warn("gateway HTTP error", "method", m.method, "status", resp.StatusCode)
	return errorResponse(m.id, CodeGatewayHTTPError, msg, map[string]int{"status": resp.StatusCode})
}

// noteSessionGone records that the gateway no longer knows the session (404
// for a request that carried one), so it is not deleted on exit.
func (s *stdioSession) noteSessionGone(resp *http.Response) bool {
	if resp.StatusCode != http.StatusNotFound || resp.Request == nil || resp.Request.Header.Get(mcpwire.HeaderSessionID) == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessionID == resp.Request.Header.Get(mcpwire.HeaderSessionID) {
		s.expired = true
	}
	return true
}

// noteInitialize records the protocol version negotiated by an initialize
// result passing through.
func (s *stdioSession) noteInitialize(body []byte) {
	var res struct {
		Result struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	if json.Unmarshal(body, &res) != nil || res.Result.ProtocolVersion == "" {
		return
	}
	s.mu.Lock()
	s.negotiated = res.Result.ProtocolVersion
	s.mu.Unlock()
}

// startGET opens the standalone SSE stream for server-initiated messages,
// once per session, for protocols that have one.
func (s *stdioSession) startGET() {
	s.mu.Lock()
	if s.getStarted || s.negotiated == "" || s.negotiated >= mcpwire.VersionStateless {
		s.mu.Unlock()
		return
	}
	s.getStarted = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runGET()
	}()
}

// runGET keeps the standalone SSE stream open until the session ends,
// resuming with Last-Event-ID after interruptions.
func (s *stdioSession) runGET() {
	var lastEventID string
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for s.ctx.Err() == nil {
		s.mu.Lock()
		sessionID, version, expired := s.sessionID, s.negotiated, s.expired
		s.mu.Unlock()
		if expired {
			return
		}
		resp, err := s.c.roundTrip(s.ctx, func(ctx context.Context, endpoint string) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Accept", mcpwire.ContentTypeSSE)
			req.Header.Set(mcpwire.HeaderProtocolVersion, version)
			if sessionID != "" {
				req.Header.Set(mcpwire.HeaderSessionID, sessionID)
			}
			if lastEventID != "" {
				req.Header.Set(mcpwire.HeaderLastEventID, lastEventID)
			}
			return req, nil
		})
		switch {
		case err != nil:
			if s.ctx.Err() != nil {
				return
			}
			s.c.log.Debug("standalone SSE stream", "err", err)
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			// 405: the gateway offers no stream; 404: the session is gone.
			drainClose(resp.Body)
			s.noteSessionGone(resp)
			s.c.log.Debug("no standalone SSE stream", "status", resp.StatusCode)
			return
		case resp.StatusCode >= 200 && resp.StatusCode < 300 && mediaType(resp.Header.Get("Content-Type")) == mcpwire.ContentTypeSSE:
			id, err := s.relaySSE(resp.Body, "", nil)
			resp.Body.Close()
			if id != "" && id != lastEventID {
				lastEventID = id
				retry.Reset()
			}
			if s.ctx.Err() != nil {
				return
			}
			s.c.log.Debug("standalone SSE stream ended", "err", err)
		default:
			drainClose(resp.Body)
			s.c.log.Debug("standalone SSE stream refused", "status", resp.StatusCode)
		}
		if retry.Wait(s.ctx) != nil {
			return
		}
	}
}

// deleteSession ends the gateway session, if there is one, even when ctx is
// already done.
func (s *stdioSession) deleteSession(parent context.Context) {
	s.mu.Lock()
	sessionID, version, expired := s.sessionID, s.negotiated, s.expired
	s.mu.Unlock()
	if sessionID == "" || expired {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), deleteTimeout)
	defer cancel()
	resp, err := s.c.roundTrip(ctx, func(ctx context.Context, endpoint string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, endpoint, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set(mcpwire.HeaderSessionID, sessionID)
		if version != "" {
			req.Header.Set(mcpwire.HeaderProtocolVersion, version)
		}
		return req, nil
	})
	if err != nil {
		s.c.log.Debug("delete session", "err", err)
		return
	}
	drainClose(resp.Body)
}

// readLimited reads all of r, failing beyond max bytes.
func readLimited(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMessageTooLarge, max)
	}
	return b, nil
}

// mediaType returns the media type of a Content-Type value, lower case.
func mediaType(v string) string {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return mt
}

// withWroteRequest makes the request carrying ctx call f once it has been
// written to the connection (or failed to be).
func withWroteRequest(ctx context.Context, f func()) context.Context {
	if f == nil {
		return ctx
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { f() },
	})
}
