package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sse"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// httpUpstream forwards to a Streamable HTTP MCP server.
type httpUpstream struct {
	g      *Gateway
	url    string
	header http.Header
	rt     http.RoundTripper
	own    *http.Transport // closed by close, if we made it
	fresh  *http.Transport // for retries: never reuses a connection
	// inProcess is set for a HandlerUpstream: the handler sees the Host
	// the client used, and a failure is never retried (nothing was lost
	// on a connection: the handler itself failed).
	inProcess bool
}

func newHTTPUpstream(g *Gateway, u HTTPUpstream) (*httpUpstream, error) {
	pu, err := url.Parse(u.URL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fmt.Errorf("%w: upstream URL %q must be an absolute http or https URL", ErrConfig, u.URL)
	}
	h := &httpUpstream{g: g, url: pu.String(), header: u.Header.Clone(), rt: u.Transport}
	if h.rt == nil {
		h.own = &http.Transport{
			Proxy: nil,
			DialContext: (&net.Dialer{
				Timeout:   10 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			// One upstream host, many concurrent clients: keep enough idle
			// connections that a burst never has to dial.
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 512,
			// Shorter than common server idle timeouts, so the gateway
			// closes an idle connection before the upstream does and the
			// close race is rare; requests that lose it anyway are retried
			// only when nothing was written (see do).
			IdleConnTimeout:       30 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: 0,
			// Bodies pass through byte for byte: no transparent gzip.
			DisableCompression: true,
			ForceAttemptHTTP2:  true,
			// Default (4 KiB) buffers: every open SSE stream of every
			// session holds an upstream connection, and 32 KiB buffers
			// cost 56 KiB more per idle session for no measurable gain
			// in calls/s or MB/s (agentmesh bench memory/resource).
		}
		h.rt = h.own
		h.fresh = h.own.Clone()
		h.fresh.DisableKeepAlives = true
	}
	return h, nil
}

func (u *httpUpstream) close() {
	if u.own != nil {
		u.own.CloseIdleConnections()
	}
}

func (u *httpUpstream) sessionDeleted(*session) {}

// closeSession tells the upstream that a session the gateway cut is over,
// so that it frees what it holds. Best effort, bounded, owned by the
// gateway.
func (u *httpUpstream) closeSession(s *session) {
	if s.id == "" {
		return
	}
	u.g.goOwned(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.url, nil)
		if err != nil {
			return
		}
		req.Header.Set(mcpwire.HeaderSessionID, s.id)
		for k, vs := range u.header {
			req.Header[k] = vs
		}
		resp, err := u.rt.RoundTrip(req)
		if err != nil {
			u.g.log.Debug("upstream session delete failed", "session", s.id, "err", err)
			return
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	})
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (u *httpUpstream) forward(w http.ResponseWriter, r *http.Request, x *exchange) {
	g := u.g
	ctx := r.Context()
	if x.streamSess != nil {
		// A server-to-client stream lives only as long as its session.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(x.streamSess.ctx, cancel)
		defer stop()
	}
	resp, err := u.do(ctx, r, x)
	if err != nil {
		if ctx.Err() != nil {
			x.outcome = audit.OutcomeClientGone
			return
		}
		g.log.Warn("upstream request failed", "event_id", x.ev.ID, "err", err)
		u.fail(w, x)
		return
	}
	defer resp.Body.Close()

	if x.msg != nil && x.msg.Method == "initialize" && x.sess == nil && resp.StatusCode/100 == 2 {
		if sid := resp.Header.Get(mcpwire.HeaderSessionID); sid != "" {
			s := newSession(g.base, sid, x.peer.ref, g.now())
			s.elicit = declaresElicitation(x.msg)
			s.hold(x.slots.session)
			x.slots.session = nil
			if !g.sessions.add(s) {
				s.cut()
				// The upstream handed out an id that is already bound:
				// never let two identities share it.
				g.log.Error("upstream reused a session id", "session", sid, "event_id", x.ev.ID)
				u.fail(w, x)
				return
			}
			x.ev.Session = sid
		}
	}
	mcpwire.CopyResponseHeaders(w.Header(), resp.Header)
	switch {
	case x.v.filter != 0 && resp.StatusCode == http.StatusOK:
		u.relayMessages(w, resp, x, true, func(data []byte) ([]byte, error) { return g.filterMessage(data, x) })
	case x.stream != nil && resp.StatusCode == http.StatusOK && isSSE(resp.Header):
		u.injecting(ctx, w, resp, x)
	case x.v.origin != nil && resp.StatusCode == http.StatusOK:
		// The answer may be a task handle, to be bound to the caller.
		if x.sess != nil {
			x.sess.watchTask(x.msg.IDKey(), x.v.origin)
		}
		u.relayMessages(w, resp, x, false, func(data []byte) ([]byte, error) {
			g.noteTask(x, data)
			return data, nil
		})
	default:
		u.copy(w, resp, x)
	}
}

// fail answers an upstream failure with a JSON-RPC CodeUpstream error carrying
// the audit event id.
func (u *httpUpstream) fail(w http.ResponseWriter, x *exchange) {
	x.outcome = audit.OutcomeUpstreamError
	var id json.RawMessage
	if x.msg != nil {
		id = x.msg.ID
	}
	writeRefusal(w, http.StatusBadGateway, id, CodeUpstream, reason.UpstreamError, x.ev.ID)
}

// do sends the request upstream. The body is the validated original bytes.
//
// Retries are limited to requests the upstream cannot have acted on:
//   - nothing of the request was written (a dial failure, a pooled
//     connection found dead; net/http retries the latter itself too, since
//     the body can be rewound);
//   - the request went out on a reused keep-alive connection and the
//     upstream closed that connection (EOF, reset) before sending a single
//     response byte. That is the signature of the idle-close race: the
//     server closed the connection as idle while our request was in
//     flight, so it never read it. Go reverse proxies lose such calls
//     ("request terminated without response"); we send them again on a
//     fresh connection.
//
// A request that reached a fresh connection, or got any response byte, is
// never replayed.
func (u *httpUpstream) do(ctx context.Context, r *http.Request, x *exchange) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		var body io.Reader
		if x.body != nil {
			body = bytes.NewReader(x.body)
		}
		var wrote, reused, gotByte atomic.Bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn:              func(ci httptrace.GotConnInfo) { reused.Store(ci.Reused) },
			WroteHeaders:         func() { wrote.Store(true) },
			GotFirstResponseByte: func() { gotByte.Store(true) },
		})
		req, err := http.NewRequestWithContext(tctx, r.Method, u.url, body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUpstream, err)
		}
		if u.inProcess {
			// A handler may check Host against where it listens (the MCP
			// SDK's DNS rebinding protection does, on loopback), and may
			// ask who calls (CallerOf).
			req.Host = r.Host
			req = req.WithContext(context.WithValue(req.Context(), callerKey{}, Caller{Src: x.ev.Src, Node: x.peer.node}))
		}
		// The allow-list only: Authorization, Cookie and the rest stay
		// here. Headers that mirror the body pass only on a POST, whose
		// body headerCheck and paramCheck have matched them with before
		// the request got here; Last-Event-ID only on a GET of a session,
		// the one request that resumes a stream (whose replay is filtered
		// like a live stream, see streamEvent).
		mcpwire.CopyRequestHeaders(req.Header, r.Header)
		switch r.Method {
		case http.MethodPost:
			for k, vs := range r.Header {
				if mcpwire.IsMirrorHeader(k) {
					req.Header[k] = vs
				}
			}
		case http.MethodGet:
			if x.sess != nil {
				mcpwire.CopyHeaders(req.Header, r.Header, mcpwire.HeaderLastEventID)
			}
		}
		for k, vs := range u.header {
			req.Header[k] = vs
		}
		if u.g.tr.On() {
			tracing.Inject(ctx, req.Header)
		}
		rt := u.rt
		if attempt > 0 && u.fresh != nil {
			// A retry goes out on a new connection, which cannot be
			// closed as idle under it.
			rt = u.fresh
		}
		resp, err := rt.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		retry := !u.inProcess && !wrote.Load() || (reused.Load() && !gotByte.Load() && closedBeforeResponse(err))
		if !retry || attempt >= 3 || ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s %s: %w", ErrUpstream, r.Method, u.url, err)
		}
		u.g.log.Debug("retrying upstream request closed before any response", "event_id", x.ev.ID, "attempt", attempt+1, "err", err)
	}
}

// closedBeforeResponse reports whether err says the upstream closed the
// connection: EOF, a reset, or net/http's "server closed idle connection"
// (not exported; its text has been stable since Go 1.6).
func closedBeforeResponse(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

// copy streams the upstream response to the client unchanged, flushing SSE
// as it arrives.
func (u *httpUpstream) copy(w http.ResponseWriter, resp *http.Response, x *exchange) {
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		w.Header().Set("Content-Length", cl)
	}
	w.WriteHeader(resp.StatusCode)
	stream := isSSE(resp.Header)
	rc := http.NewResponseController(w)
	if stream {
		rc.Flush()
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				x.outcome = audit.OutcomeClientGone
				return
			}
			if stream {
				rc.Flush()
			}
		}
		if errors.Is(err, io.EOF) && !u.endedByCut(resp) {
			break
		}
		if err != nil {
			x.outcome = audit.OutcomeUpstreamError
			return
		}
	}
	x.outcome = audit.OutcomeOfStatus(resp.StatusCode)
}

// relayMessages answers with the upstream's response passed message by
// message through fn: a JSON body as one message, an SSE stream event by
// event (events without data pass as they are). With must set (list
// filtering), a body or event that fn cannot handle ends the answer with an
// error, never the unprocessed message; without it (observing task
// handles, which are small), a JSON body larger than maxTaskHandleBytes is
// relayed unprocessed, as it streams.
func (u *httpUpstream) relayMessages(w http.ResponseWriter, resp *http.Response, x *exchange, must bool, fn func([]byte) ([]byte, error)) {
	max := u.g.cfg.MaxResponseBytes
	if !isSSE(resp.Header) {
		limit := max
		if !must {
			limit = min(max, maxTaskHandleBytes)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err == nil && int64(len(body)) > limit && !must {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
			u.copy(w, resp, x)
			return
		}
		if err != nil || int64(len(body)) > max {
			w.Header().Del("Content-Type")
			u.fail(w, x)
			return
		}
		out, err := fn(body)
		if err != nil {
			u.g.log.Warn("cannot filter list response", "event_id", x.ev.ID, "err", err)
			w.Header().Del("Content-Type")
			u.fail(w, x)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(out)))
		w.WriteHeader(http.StatusOK)
		w.Write(out)
		x.outcome = audit.OutcomeOK
		return
	}
	w.WriteHeader(http.StatusOK)
	fw := newFlushWriter(w)
	er := sse.NewReader(resp.Body, int(max))
	for {
		ev, err := er.Next()
		if err != nil {
			if errors.Is(err, io.EOF) && !u.endedByCut(resp) {
				x.outcome = audit.OutcomeOK
			} else {
				x.outcome = audit.OutcomeUpstreamError
			}
			return
		}
		out := ev.Raw
		if len(ev.Data) > 0 {
			data, err := fn(ev.Data)
			if err != nil {
				u.g.log.Warn("cannot filter list response", "event_id", x.ev.ID, "err", err)
				x.outcome = audit.OutcomeUpstreamError
				return
			}
			if !bytes.Equal(data, ev.Data) {
				out = ev.Rewrite(data)
			}
		}
		if fw.write(out) != nil {
			x.outcome = audit.OutcomeClientGone
			return
		}
	}
}

// filterMessage filters data if it is a successful response; other messages
// (notifications on the same stream, errors) are returned as they are.
func (g *Gateway) filterMessage(data []byte, x *exchange) ([]byte, error) {
	m, err := g.decodeOne(data)
	if err != nil {
		return nil, err
	}
	if m.Kind != mcpwire.KindResponse || m.Error != nil {
		return data, nil
	}
	sess := x.sess
	if sess == nil {
		sess = g.sessions.statelessFor(g.base, x.peer.ref, g.now())
	}
	result, err := g.filterResult(m, x.v.filter, x.v.page, g.peerKeeper(x.v.filter, x.peer), sess)
	if err != nil {
		return nil, err
	}
	return responseBytes(m.ID, result), nil
}

// decodeOne decodes one upstream message (never a batch).
func (g *Gateway) decodeOne(data []byte) (*mcpwire.Message, error) {
	msgs, batch, err := mcpwire.Decode(data, mcpwire.Limits{MaxBytes: int(g.cfg.MaxResponseBytes), MaxDepth: g.cfg.Limits.MaxDepth})
	if err != nil {
		return nil, err
	}
	if batch || len(msgs) != 1 {
		return nil, errors.New("batch in a response")
	}
	return &msgs[0], nil
}

// filterResult returns the result of the success response m with its k
// list filtered by keep (see keeper), remembering in sess what was shown.
func (g *Gateway) filterResult(m *mcpwire.Message, k listKind, page listPage, keep func(string) bool, sess *session) ([]byte, error) {
	var hide map[string]bool
	if k == listTools {
		g.params.learn(m.Result)
		var err error
		if hide, err = g.observeTools(m.Result, page, sess); err != nil {
			return nil, err
		}
	}
	seen := make(map[string]bool)
	result, _, err := m.FilterResult(k.field(), func(name string) bool {
		ok := keep(name) && !hide[name]
		seen[name] = ok
		return ok
	})
	if err != nil {
		return nil, err
	}
	if k != listTasks {
		names := make([]string, 0, len(seen))
		for n := range seen {
			names = append(names, n)
		}
		sess.remember(k, names, func(n string) bool { return seen[n] })
	}
	return result, nil
}

// responseBytes is the success response to id with result.
func responseBytes(id, result []byte) []byte {
	out := make([]byte, 0, len(result)+len(id)+40)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, id...)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	return append(out, '}')
}

// keeper returns what a k list shows: the items vis makes visible, or for
// tasks/list the tasks owner owns.
func (g *Gateway) keeper(k listKind, vis policy.Visibility, owner peerRef) func(string) bool {
	if k == listTasks {
		now := g.now()
		return func(id string) bool {
			_, ok := g.tasks.lookup(id, owner, now)
			return ok
		}
	}
	return func(name string) bool { return visibleIn(vis, k, name) }
}

// peerKeeper is keeper for an admitted peer.
func (g *Gateway) peerKeeper(k listKind, p *peerInfo) func(string) bool {
	return g.keeper(k, p.visibility(), p.ref)
}

// streamEvent processes one event of a server-to-client stream (a GET
// stream, which is also where a Last-Event-ID resumption replays what a
// POST stream lost): a response on it is filtered exactly as on the stream
// of its request. Its list kind is read from the shape of the result (a
// "tools", "prompts", "resources", "resourceTemplates" or "tasks" array),
// so no replayed list passes unfiltered whether or not the gateway
// remembers the request; a task handle is bound as on the POST stream. An
// event that cannot be processed is dropped, never passed on unfiltered.
func (g *Gateway) streamEvent(ev sse.Event, x *exchange, sess *session) ([]byte, bool) {
	if len(ev.Data) == 0 {
		return ev.Raw, true
	}
	m, err := g.decodeOne(ev.Data)
	if err != nil {
		g.log.Warn("dropped an undecodable event from a server-to-client stream", "event_id", x.ev.ID, "err", err)
		return nil, false
	}
	if m.Kind != mcpwire.KindResponse || m.Error != nil {
		return ev.Raw, true
	}
	if o := sess.takeWatched(m.IDKey()); o != nil {
		g.noteTaskOf(m, x.peer.ref, *o)
	}
	k, err := resultList(m)
	if k == 0 && err == nil {
		return ev.Raw, true
	}
	var result []byte
	if err == nil {
		result, err = g.filterResult(m, k, listPage{}, g.peerKeeper(k, x.peer), sess) // a replay: its request is unknown
	}
	if err != nil {
		g.log.Warn("dropped an unfilterable list from a server-to-client stream", "event_id", x.ev.ID, "err", err)
		return nil, false
	}
	return ev.Rewrite(responseBytes(m.ID, result)), true
}

// resultList returns the list kind whose array the result of m holds at
// its top level, or 0; several lists in one result are an error, since
// one filter would pass the others.
func resultList(m *mcpwire.Message) (listKind, error) {
	var found listKind
	for _, k := range []listKind{listTools, listPrompts, listResources, listTemplates, listTasks} {
		if m.ResultHas(k.field()) {
			if found != 0 {
				return 0, errors.New("a result holding more than one list")
			}
			found = k
		}
	}
	return found, nil
}

// injecting relays a server-to-client SSE stream event by event and adds
// list_changed notifications when the session's view changes.
func (u *httpUpstream) injecting(ctx context.Context, w http.ResponseWriter, resp *http.Response, x *exchange) {
	w.WriteHeader(resp.StatusCode)
	fw := newFlushWriter(w)
	fw.write(nil)
	st, sess := x.stream, x.streamSess
	sess.attach(st)
	defer sess.detach(st)
	done := make(chan error, 1)
	// The reader is owned by this handler, which waits for it below.
	go func() {
		er := sse.NewReader(resp.Body, int(u.g.cfg.MaxResponseBytes))
		for {
			ev, err := er.Next()
			if err != nil {
				done <- err
				return
			}
			out, ok := u.g.streamEvent(ev, x, sess)
			if !ok {
				continue
			}
			if err := fw.write(out); err != nil {
				done <- errClientGone
				return
			}
		}
	}()
	for {
		select {
		case err := <-done:
			switch {
			case errors.Is(err, io.EOF):
				x.outcome = audit.OutcomeOK
			case errors.Is(err, errClientGone):
				x.outcome = audit.OutcomeClientGone
			case ctx.Err() != nil:
				x.outcome = audit.OutcomeStreamCut
			default:
				x.outcome = audit.OutcomeUpstreamError
			}
			return
		case <-st.wake:
			for _, m := range st.messages(st.take()) {
				fw.write(sse.Message(m))
			}
		case <-ctx.Done():
			resp.Body.Close()
			<-done
			x.outcome = audit.OutcomeStreamCut
			return
		}
	}
}

func isSSE(h http.Header) bool {
	ct := h.Get("Content-Type")
	if !strings.HasPrefix(ct, mcpwire.ContentTypeSSE) {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == mcpwire.ContentTypeSSE
}
