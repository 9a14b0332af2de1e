package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// commandUpstream runs one stdio MCP server process per client session and
// serves Streamable HTTP to the client with the SDK's server transport.
type commandUpstream struct {
	g   *Gateway
	cfg CommandUpstream
}

func newCommandUpstream(g *Gateway, c CommandUpstream) (*commandUpstream, error) {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return nil, fmt.Errorf("%w: CommandUpstream.Argv is empty", ErrConfig)
	}
	return &commandUpstream{g: g, cfg: c}, nil
}

// stdioBridge pumps one session's messages between the client's
// Streamable HTTP transport and the process's stdio.
type stdioBridge struct {
	g      *Gateway
	t      *mcp.StreamableServerTransport
	client mcp.Connection // towards the HTTP client
	proc   mcp.Connection // towards the process
	cmd    *exec.Cmd
	ctx    context.Context
	cancel context.CancelFunc
	sess   *session

	mu    sync.Mutex
	lists map[jsonrpc.ID]pendingList // list requests awaiting their result
	// tasks are requests awaiting a result that may be a task handle.
	tasks map[jsonrpc.ID]*taskOrigin
	// progress maps the progress token of each client request in flight
	// (its raw JSON) to the request's id, so the process's progress
	// notifications go out on that request's stream, before its result.
	progress map[string]jsonrpc.ID
	// calls are the client's requests whose response the process has not
	// sent yet: one cut short is still owed its answer (cut.go).
	calls map[jsonrpc.ID]struct{}
	once  sync.Once

	// procSlot counts the process in the process caps until it has
	// exited.
	procSlot *budget.Lease

	// started is when the process was started; the first message it
	// sends (its initialize result) makes it ready. Starting a process
	// per session costs seconds with npx, and a person waits for it.
	started time.Time
	command string
	// answered is set once the process sent its first message; failOnce
	// logs, once, a process that failed before (read or write, whichever
	// pump notices first: the other then sees the session ended).
	answered atomic.Bool
	failOnce sync.Once
}

func (u *commandUpstream) forward(w http.ResponseWriter, r *http.Request, x *exchange) {
	g := u.g
	if x.sess == nil {
		if r.Method != http.MethodPost || x.msg == nil || x.msg.Kind != mcpwire.KindRequest || x.msg.Method != "initialize" {
			u.unsupported(w, r, x)
			return
		}
		s, err := u.start(x)
		if err != nil {
			g.log.Error("cannot start upstream process", "event_id", x.ev.ID, "err", err)
			x.outcome = audit.OutcomeUpstreamError
			writeRefusal(w, http.StatusBadGateway, x.msg.ID, CodeUpstream, reason.UpstreamError, x.ev.ID)
			return
		}
		x.sess = s
		x.ev.Session = s.id
	}
	b, _ := x.sess.up.(*stdioBridge)
	if b == nil {
		x.outcome = audit.OutcomeUpstreamError
		writeRefusal(w, http.StatusBadGateway, nil, CodeUpstream, reason.UpstreamError, x.ev.ID)
		return
	}
	switch r.Method {
	case http.MethodDelete:
		// The handler ends the session, which stops the process.
		w.WriteHeader(http.StatusNoContent)
		x.outcome = audit.OutcomeOK
		return
	case http.MethodPost:
		if (x.v.filter != 0 || x.v.origin != nil) && x.msg.Kind == mcpwire.KindRequest {
			if id, err := jsonrpc.MakeID(rawID(x.msg.ID)); err == nil {
				b.mu.Lock()
				if x.v.filter != 0 {
					b.lists[id] = pendingList{x.v.filter, x.v.page}
				} else {
					b.tasks[id] = x.v.origin
				}
				b.mu.Unlock()
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(x.body))
	}
	var call jsonrpc.ID
	if r.Method == http.MethodPost && x.msg.Kind == mcpwire.KindRequest {
		if id, err := jsonrpc.MakeID(rawID(x.msg.ID)); err == nil && id.IsValid() {
			call = id
			b.mu.Lock()
			b.calls[id] = struct{}{}
			b.mu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(b.ctx, cancel)
	defer stop()
	b.t.ServeHTTP(w, r.WithContext(ctx))
	x.outcome = audit.OutcomeOK
	if call.IsValid() {
		b.mu.Lock()
		_, owed := b.calls[call]
		delete(b.calls, call)
		b.mu.Unlock()
		if owed && cutOf(r.Context()) != nil {
			x.outcome = audit.OutcomeClosed // answered by answerCut
		}
	}
}

// rawID turns a JSON id into the Go value jsonrpc.MakeID expects.
func rawID(id json.RawMessage) any {
	var v any
	if json.Unmarshal(id, &v) != nil {
		return nil
	}
	return v
}

// unsupported answers requests that need a session the client does not
// have: stateless (2026-07-28) requests get the SDK's unsupported-version
// error, so clients fall back to initialize.
func (u *commandUpstream) unsupported(w http.ResponseWriter, r *http.Request, x *exchange) {
	x.outcome = audit.OutcomeUnsupported
	if r.Method != http.MethodPost || x.msg == nil || x.msg.Kind != mcpwire.KindRequest {
		// Refused here, not by the upstream: the audit event says so,
		// with the reason the client sees.
		x.ev.Decision, x.ev.Reason, x.outcome = audit.Deny, reason.UnknownSession, audit.OutcomeRejected
		writeRefusal(w, http.StatusBadRequest, nil, CodeRejected, reason.UnknownSession, x.ev.ID)
		return
	}
	requested := r.Header.Get(mcpwire.HeaderProtocolVersion)
	data, _ := json.Marshal(mcp.UnsupportedProtocolVersionData{
		Supported: mcpwire.SessionVersions(),
		Requested: requested,
	})
	b := mcpwire.ErrorResponse(x.msg.ID, mcpwire.Error{
		Code:    mcp.CodeUnsupportedProtocolVersion,
		Message: "this gateway serves its stdio upstream with sessions; use initialize",
		Data:    data,
	})
	w.Header().Set("Content-Type", mcpwire.ContentTypeJSON)
	w.WriteHeader(http.StatusBadRequest)
	w.Write(b)
}

// start creates a session and its process for an initialize request.
func (u *commandUpstream) start(x *exchange) (*session, error) {
	g := u.g
	sid := rand.Text()
	s := newSession(g.base, sid, x.peer.ref, g.now())
	s.elicit = declaresElicitation(x.msg)
	s.hold(x.slots.session)
	x.slots.session = nil
	cmd := exec.Command(u.cfg.Argv[0], u.cfg.Argv[1:]...)
	cmd.Env, cmd.Dir = u.cfg.Env, u.cfg.Dir
	cmd.Stderr = u.cfg.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = &lineLogger{log: g.log.With("session", sid, "upstream", u.cfg.Argv[0])}
	}
	command := strings.Join(u.cfg.Argv, " ")
	started := g.now()
	g.log.Info("serve: starting upstream `"+command+"` for a new session", "session", sid, "peer", x.ev.Src)
	proc, err := (&mcp.CommandTransport{Command: cmd, TerminateDuration: time.Second}).Connect(s.ctx)
	if err != nil {
		s.cut()
		return nil, fmt.Errorf("start %s: %w", u.cfg.Argv[0], err)
	}
	t := &mcp.StreamableServerTransport{SessionID: sid}
	client, err := t.Connect(s.ctx)
	if err != nil {
		proc.Close()
		s.cut()
		return nil, fmt.Errorf("session transport: %w", err)
	}
	b := &stdioBridge{g: g, t: t, client: client, proc: proc, cmd: cmd, sess: s, procSlot: x.slots.process,
		started: started, command: command,
		lists: make(map[jsonrpc.ID]pendingList), tasks: make(map[jsonrpc.ID]*taskOrigin),
		progress: make(map[string]jsonrpc.ID), calls: make(map[jsonrpc.ID]struct{})}
	x.slots.process = nil
	g.cfg.Metrics.AddProcesses(1)
	b.ctx, b.cancel = context.WithCancel(s.ctx)
	s.up = b
	s.inject = b.inject
	if !g.sessions.add(s) {
		b.close()
		return nil, fmt.Errorf("session id collision")
	}
	g.goOwned(b.pumpToProcess)
	g.goOwned(b.pumpToClient)
	return s, nil
}

// since is how long ago the bridge's process was started, to the
// millisecond.
func (b *stdioBridge) since() time.Duration {
	return b.g.now().Sub(b.started).Round(time.Millisecond)
}

func (u *commandUpstream) closeSession(s *session) {
	if b, ok := s.up.(*stdioBridge); ok {
		b.close()
	}
}

func (u *commandUpstream) sessionDeleted(s *session) { u.closeSession(s) }

func (u *commandUpstream) close() {}

// close stops the bridge: the process is killed (a session that ended, was
// deleted or was cut has nothing more to say to it) and both pumps end.
func (b *stdioBridge) close() {
	b.once.Do(func() {
		b.cancel()
		if b.cmd.Process != nil {
			b.cmd.Process.Kill()
		}
		b.client.Close()
		// Reaps the process; owned so that Serve waits for it. The
		// process counts against the caps until it has exited.
		b.g.goOwned(func() {
			b.proc.Close()
			b.procSlot.Release()
			b.g.cfg.Metrics.AddProcesses(-1)
		})
	})
}

func (b *stdioBridge) pumpToProcess() {
	defer b.g.endSession(b.sess)
	for {
		msg, err := b.client.Read(b.ctx)
		if err != nil {
			return
		}
		if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
			if tok := progressToken(req.Params, "_meta"); tok != "" {
				b.mu.Lock()
				b.progress[tok] = req.ID
				b.mu.Unlock()
			}
		}
		if err := b.proc.Write(b.ctx, msg); err != nil {
			b.failed(err)
			return
		}
	}
}

// failed logs a process that failed before it answered, unless the bridge
// was stopped (its context ended) or the process had answered.
func (b *stdioBridge) failed(err error) {
	if b.answered.Load() || b.ctx.Err() != nil {
		return
	}
	b.failOnce.Do(func() {
		b.g.log.Warn(fmt.Sprintf("serve: upstream `%s` failed after %s, before it answered", b.command, b.since()),
			"session", b.sess.id, "err", err)
	})
}

func (b *stdioBridge) pumpToClient() {
	defer b.g.endSession(b.sess)
	for {
		msg, err := b.proc.Read(b.ctx)
		if err != nil {
			b.failed(err)
			return
		}
		if !b.answered.Swap(true) {
			b.g.log.Info(fmt.Sprintf("serve: upstream `%s` ready after %s", b.command, b.since()), "session", b.sess.id)
		}
		ctx := b.ctx
		switch m := msg.(type) {
		case *jsonrpc.Response:
			b.mu.Lock()
			l := b.lists[m.ID]
			delete(b.lists, m.ID)
			origin := b.tasks[m.ID]
			delete(b.tasks, m.ID)
			delete(b.calls, m.ID)
			for tok, id := range b.progress {
				if id == m.ID {
					delete(b.progress, tok)
				}
			}
			b.mu.Unlock()
			if l.kind != 0 && m.Error == nil {
				msg = b.filter(m, l)
			}
			if origin != nil && m.Error == nil {
				if rm, err := responseMessage(m); err == nil {
					b.g.noteTaskOf(rm, b.sess.ref(), *origin)
				}
			}
		case *jsonrpc.Request:
			if !m.IsCall() && m.Method == "notifications/progress" {
				b.mu.Lock()
				id, ok := b.progress[progressToken(m.Params, "")]
				b.mu.Unlock()
				if ok {
					ctx = requestContext{Context: ctx, id: id}
				}
			}
		}
		if err := b.client.Write(ctx, msg); err != nil {
			b.g.log.Debug("write to client failed", "session", b.sess.id, "err", err)
		}
	}
}

// progressToken returns the raw JSON of the progress token in params
// (under "_meta" when in is "_meta", at the top level otherwise), or "".
func progressToken(params json.RawMessage, in string) string {
	var p struct {
		Meta struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
		Token json.RawMessage `json:"progressToken"`
	}
	if len(params) == 0 || json.Unmarshal(params, &p) != nil {
		return ""
	}
	if in == "_meta" {
		return string(p.Meta.ProgressToken)
	}
	return string(p.Token)
}

// requestContext tells the SDK's streamable server transport which client
// request a message belongs to, so that it goes out on that request's SSE
// stream instead of the session's standalone stream (where a progress
// notification would race the result and arrive after it). The transport
// reads the request id from the context under an unexported key type,
// mcp.idContextKey (streamable_server.go documents the mechanism); this
// context answers that one key. TestStdioProgressPrecedesResult fails if an
// SDK upgrade changes it.
type requestContext struct {
	context.Context
	id jsonrpc.ID
}

func (c requestContext) Value(key any) any {
	if t := reflect.TypeOf(key); t != nil && t.Name() == "idContextKey" && t.PkgPath() == "github.com/modelcontextprotocol/go-sdk/mcp" {
		return c.id
	}
	return c.Context.Value(key)
}

// pendingList is a list request awaiting its result: what it lists and
// which page.
type pendingList struct {
	kind listKind
	page listPage
}

// filter returns resp with its list filtered under the current state, or an
// error response if it cannot be (never the unfiltered list).
func (b *stdioBridge) filter(resp *jsonrpc.Response, l pendingList) jsonrpc.Message {
	k := l.kind
	st := b.g.state.Load()
	vis, ok := visibleFor(b.sess, st)
	fail := &jsonrpc.Response{ID: resp.ID, Error: &jsonrpc.Error{Code: mcpwire.CodeInternalError, Message: "gateway: cannot filter list"}}
	if !ok {
		return fail
	}
	m, err := responseMessage(resp)
	var out []byte
	if err == nil {
		out, err = b.g.filterResult(m, k, l.page, b.g.keeper(k, vis, b.sess.ref()), b.sess)
	}
	if err != nil {
		b.g.log.Warn("cannot filter list response", "session", b.sess.id, "err", err)
		return fail
	}
	return &jsonrpc.Response{ID: resp.ID, Result: out}
}

// responseMessage reads an SDK response from the process as the strict
// decoder sees it (a Message whose Result filterResult and CreatedTaskID
// read).
func responseMessage(resp *jsonrpc.Response) (*mcpwire.Message, error) {
	b := responseBytes([]byte("0"), resp.Result)
	msgs, _, err := mcpwire.Decode(b, mcpwire.Limits{MaxBytes: len(b)})
	if err != nil {
		return nil, err
	}
	return &msgs[0], nil
}

// inject sends list_changed notifications on the session's standalone
// stream.
func (b *stdioBridge) inject(bits listKind) {
	st := newStream(listAll, nil)
	st.post(bits)
	for _, m := range st.messages(st.take()) {
		var n struct {
			Method string `json:"method"`
		}
		_ = json.Unmarshal(m, &n)
		if err := b.client.Write(b.ctx, &jsonrpc.Request{Method: n.Method}); err != nil {
			b.g.log.Debug("list_changed not delivered", "session", b.sess.id, "err", err)
		}
	}
}

// lineLogger writes a process's stderr to the log, one record per line.
type lineLogger struct {
	log *slog.Logger
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Info("upstream stderr", "line", string(bytes.TrimRight(l.buf[:i], "\r")))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 {
		l.log.Info("upstream stderr", "line", string(l.buf))
		l.buf = l.buf[:0]
	}
	return len(p), nil
}
