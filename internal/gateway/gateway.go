package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/toolpin"
	"github.com/agentmesh/agentmesh/internal/tracing"
)

// Upstream is where allowed messages go: HTTPUpstream, CommandUpstream or
// HandlerUpstream.
type Upstream interface{ isUpstream() }

// HTTPUpstream is a Streamable HTTP MCP server.
type HTTPUpstream struct {
	// URL is the MCP endpoint, such as http://127.0.0.1:8000/mcp.
	URL string
	// Header is added to every upstream request: the gateway's own
	// credentials for the upstream, if it needs any.
	Header http.Header
	// Transport overrides the HTTP transport to the upstream; nil uses a
	// keep-alive transport tuned for one upstream host.
	Transport http.RoundTripper
}

// CommandUpstream is a stdio MCP server started once per client session.
type CommandUpstream struct {
	// Argv is the command and its arguments; Argv[0] is looked up in PATH.
	Argv []string
	// Env is the process environment; nil inherits the gateway's.
	Env []string
	// Dir is the working directory; "" is the gateway's.
	Dir string
	// Stderr receives the process's standard error; nil sends it to the
	// gateway's log, line by line.
	Stderr io.Writer
}

func (HTTPUpstream) isUpstream()    {}
func (CommandUpstream) isUpstream() {}

// Config configures a Gateway.
type Config struct {
	// TLS is the server configuration from pki.NewServerTLS: the handshake
	// has verified the client's chain. Required by Serve.
	TLS *tls.Config
	// Upstream is an HTTPUpstream, a CommandUpstream or a HandlerUpstream.
	// Required.
	Upstream Upstream
	// Audit receives every decision. Required: a gateway that cannot
	// audit does not serve.
	Audit admission.Recorder
	// Refusals, when set, aggregates the refusals of peers that are not
	// admitted (see RecordRefusal); nil records each one through Audit.
	Refusals *audit.Refusals
	// Limits bound every decoded message; zero values are mcpwire's
	// defaults (4 MiB, depth 64).
	Limits mcpwire.Limits
	// Logger is for operators; nil discards.
	Logger *slog.Logger
	// Now is the clock of audit events and latencies; nil is time.Now.
	Now func() time.Time
	// TracerProvider, when set, traces every admitted request (a server
	// span with children for the decision and the upstream hop) and
	// propagates the trace to the upstream; nil traces nothing. See
	// package tracing.
	TracerProvider trace.TracerProvider
	// RecordArgsHash stores the SHA-256 of tool call arguments in audit
	// events.
	RecordArgsHash bool
	// MaxResponseBytes bounds a list response that must be parsed to be
	// filtered; zero is 64 MiB. Other responses stream without bound.
	MaxResponseBytes int64
	// SessionIdleTimeout ends a session that has had no request in flight
	// (an open stream counts as one) for this long, with its upstream
	// process or upstream session: clients that vanish without a DELETE
	// would otherwise hold them forever. Zero is 30 minutes.
	SessionIdleTimeout time.Duration
	// MaxSessionsPerPeer bounds the sessions one peer holds open at once:
	// an initialize that would open one more is refused (HTTP 429,
	// too_many_sessions) before it reaches the upstream. Zero is
	// DefaultMaxSessionsPerPeer.
	MaxSessionsPerPeer int
	// MaxRequestsPerPeer bounds the requests one peer has in flight at
	// once, open streams (GET, subscriptions/listen) included: one more
	// is refused (HTTP 429, too_many_requests) before its body is read.
	// Zero is DefaultMaxRequestsPerPeer.
	MaxRequestsPerPeer int
	// MaxProcessesPerPeer and MaxProcesses bound the processes of a stdio
	// upstream (one per session) that one peer, and all peers together,
	// hold at once: a session over either is refused (HTTP 429 or 503,
	// too_many_processes) before its process starts. A process counts
	// until it has exited. Zero is DefaultMaxProcessesPerPeer and
	// DefaultMaxProcesses.
	MaxProcessesPerPeer int
	MaxProcesses        int
	// Bodies bounds the request bodies held in memory, in all and per
	// peer, and how long one may take to arrive (see package budget);
	// over the budget a request is refused at once (HTTP 429 or 503,
	// over_budget), a body late past the deadline with HTTP 408
	// (body_timeout). Zero fields are budget's defaults: 16 and 64 times
	// Limits.MaxBytes, 30 seconds.
	Bodies budget.Bodies
	// Conns bounds the connections that have not finished their TLS
	// handshake (see ServeOn); zero fields are connlimit's defaults.
	// OnRefuse is ignored: refusals are audited through Refusals.
	Conns connlimit.Config
	// Identifier, when set, identifies requests that arrive without TLS
	// (a tailnet's WireGuard authenticates the transport instead): see
	// Caller. With TLS nil, Serve then serves plain HTTP, which is only
	// safe on a listener whose transport authenticates and encrypts, such
	// as tailnet.Node's. Nil refuses every request without a certificate.
	Identifier admission.Identifier
	// Metrics records latencies and open sessions, streams and stdio
	// processes; nil records nothing. (Decisions are counted from the
	// audit events, by whoever wraps Audit.)
	Metrics *metrics.Set
	// Approvals reaches the coordinator's approval API for calls a grant
	// holds for a person's approval (holds.go); nil denies such calls
	// (approval_unavailable). MaxHolds and MaxHoldsPerPeer bound the calls
	// held at once, in all and per caller; zero is DefaultMaxHolds and
	// DefaultMaxHoldsPerPeer.
	Approvals       Approvals
	MaxHolds        int
	MaxHoldsPerPeer int
	// OnTools, when set, is called with the latest definition of every
	// tool the gateway has seen listed (see Gateway.Tools) each time one
	// is new or changed, for the coordinator's review workflow. It is
	// called on a request's path: it must not block.
	OnTools func([]toolpin.Definition)
}

const (
	defaultMaxBytes    = 4 << 20
	defaultMaxResponse = 64 << 20
	defaultIdleTimeout = 30 * time.Minute
	mcpPath            = "/mcp"
)

// Gateway is the server side of the data plane. Create it with New; it
// serves after Serve is called.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	maxBytes int64
	tr       tracing.Tracer

	state    atomic.Pointer[admission.State]
	up       upstream
	sessions *sessionTable
	conns    *connTable
	// stateless are the delegated requests in flight in no session
	// (statelesscut.go).
	stateless statelessCalls
	caps      caps
	tasks     *taskTable
	params    *paramHeaders
	holds     holdTable
	elicits   elicitTable // holdelicit.go
	parked    parkTable   // holdinput.go
	// parkGrace is how long a parked hold outlives its approval timeout.
	parkGrace time.Duration
	tools     *toolDefs
	handler   http.Handler

	serving atomic.Bool
	// base is cancelled when Serve's context ends; every stream and process
	// hangs off it.
	base       context.Context
	cancelBase context.CancelFunc
	wg         sync.WaitGroup
}

// upstream is what the request handler needs from either kind of upstream.
type upstream interface {
	// forward serves one admitted, allowed client request whose body (for
	// POST) has been decoded and checked.
	forward(w http.ResponseWriter, r *http.Request, x *exchange)
	// closeSession releases what the upstream holds for a session the
	// gateway ended.
	closeSession(s *session)
	// sessionDeleted releases what the gateway holds for a session the
	// client deleted (the DELETE was forwarded).
	sessionDeleted(s *session)
	// close releases everything; called once Serve has stopped serving.
	close()
}

// New checks cfg and returns a gateway enforcing initial (nil: the zero
// admission.State, which denies everything).
func New(cfg Config, initial *admission.State) (*Gateway, error) {
	if cfg.Audit == nil {
		return nil, fmt.Errorf("%w: Audit recorder is required", ErrConfig)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, now: cfg.Now, tr: tracing.NewTracer(cfg.TracerProvider, "gateway")}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	g.maxBytes = int64(cfg.Limits.MaxBytes)
	if g.maxBytes <= 0 {
		g.maxBytes = defaultMaxBytes
	}
	if g.cfg.MaxResponseBytes <= 0 {
		g.cfg.MaxResponseBytes = defaultMaxResponse
	}
	if g.cfg.SessionIdleTimeout <= 0 {
		g.cfg.SessionIdleTimeout = defaultIdleTimeout
	}
	var err error
	if g.caps, err = newCaps(&g.cfg, g.maxBytes); err != nil {
		return nil, err
	}
	g.base, g.cancelBase = context.WithCancel(context.Background())
	g.parkGrace = parkGrace
	g.sessions = newSessionTable()
	g.sessions.metrics = cfg.Metrics
	g.conns = newConnTable()
	g.tasks = newTaskTable()
	g.params = newParamHeaders()
	g.tools = newToolDefs()
	up, err := deref(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	switch u := up.(type) {
	case HTTPUpstream:
		g.up, err = newHTTPUpstream(g, u)
	case HandlerUpstream:
		g.up, err = newHandlerUpstream(g, u)
	case CommandUpstream:
		g.up, err = newCommandUpstream(g, u)
	}
	if err != nil {
		return nil, err
	}
	if initial == nil {
		initial = &admission.State{}
	}
	g.state.Store(initial)
	mux := http.NewServeMux()
	mux.HandleFunc(mcpPath, g.serveMCP)
	g.handler = mux
	return g, nil
}

// deref returns up as a value of one of the Upstream kinds, refusing nil
// and unknown kinds.
func deref(up Upstream) (Upstream, error) {
	switch u := up.(type) {
	case HTTPUpstream, HandlerUpstream, CommandUpstream:
		return u, nil
	case *HTTPUpstream:
		if u != nil {
			return *u, nil
		}
	case *HandlerUpstream:
		if u != nil {
			return *u, nil
		}
	case *CommandUpstream:
		if u != nil {
			return *u, nil
		}
	default:
		return nil, fmt.Errorf("%w: Upstream must be HTTPUpstream, CommandUpstream or HandlerUpstream, got %T", ErrConfig, up)
	}
	return nil, fmt.Errorf("%w: nil upstream", ErrConfig)
}

// Handler returns the /mcp handler. It expects requests carrying r.TLS (as
// served by Serve, or by an httptest TLS server using Config.TLS); without
// TLS peer data every request is refused, unless Config.Identifier names
// the caller.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Serve serves MCP over TLS on ln until ctx is done (with Config.TLS nil and
// an Identifier: HTTP/1.1 and prior-knowledge HTTP/2 without TLS, for a
// listener whose transport authenticates and encrypts). It returns when
// everything it started (connections, streams, sessions, child processes)
// has stopped. It closes ln.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if g.cfg.TLS == nil && g.cfg.Identifier == nil {
		ln.Close()
		return fmt.Errorf("serve: %w: TLS configuration is required", ErrConfig)
	}
	if !g.serving.CompareAndSwap(false, true) {
		ln.Close()
		return fmt.Errorf("serve: %w", ErrServing)
	}
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return g.base },
		ConnContext:       g.conns.connContext,
		ConnState:         g.conns.connState,
	}
	ln = admission.ServeOn(srv, ln, g.cfg.TLS, g.connLimits())
	g.goOwned(g.reapLoop)
	// Sessions and their streams hang off g.base, not off one request:
	// they end as soon as ctx does, with the requests httpserver.Run ends.
	stopBase := context.AfterFunc(ctx, g.cancelBase)
	defer stopBase()
	err := httpserver.Run(ctx, srv, ln)
	g.cancelBase()
	for _, s := range g.sessions.removeAll() {
		s.cut()
		g.up.closeSession(s)
	}
	g.up.close()
	g.endParkedOf(func(*parkedHold) bool { return true })
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// connLimits is Config.Conns reporting to the audit trail.
func (g *Gateway) connLimits() connlimit.Config {
	c := g.cfg.Conns
	c.OnRefuse = admission.ConnRefusals(g.cfg.Refusals, g.cfg.Audit, g.now, func() string { return g.state.Load().Dst() }, g.log)
	return c
}

// go runs f as a goroutine owned by the gateway: Serve waits for it.
func (g *Gateway) goOwned(f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// Update swaps in s (nil: deny everything). Open sessions apply it from
// their next message; sessions whose visible lists changed are sent
// list_changed notifications; peers that lost access have their
// connections, sessions and processes closed before Update returns.
func (g *Gateway) Update(s *admission.State) {
	if s == nil {
		s = &admission.State{}
	}
	g.state.Store(s)
	// Cut peers that are no longer admitted.
	var cuts []connCut
	for _, tc := range g.conns.snapshot() {
		p := tc.peer()
		if p == nil || p.caller != nil {
			continue // Identifier callers are re-checked below
		}
		if why := s.Check(p.id, p.incarnation); why != "" {
			cuts = append(cuts, connCut{tc, p.id.String(), why, s})
		}
	}
	g.closeConns(cuts)
	for _, sess := range g.sessions.all() {
		if sess.hasCaller {
			continue // re-checked below
		}
		if why := s.Check(sess.owner, sess.incarnation); why != "" {
			g.log.Info("closing session of peer that lost access", "peer", sess.owner.String(), "session", sess.id, "reason", why)
			ev := &audit.Event{
				ID:   audit.NewID(),
				Kind: audit.KindSession, Src: sess.owner.String(), Dst: s.Dst(), User: sess.user,
				Session: sess.id, Decision: audit.Deny, Reason: why, Outcome: audit.OutcomeClosed,
				PolicyVersion: s.PolicyVersion(),
			}
			g.record(context.Background(), ev)
			g.endSessionFor(sess, &cutError{why: why, eventID: ev.ID})
			continue
		}
		if g.delegationLapsed(sess, s) {
			continue
		}
		sess.recheck(s)
	}
	g.lapsedStateless(s)
	g.recheckCallers(context.Background(), s)
	g.endParkedOf(func(p *parkedHold) bool { return p.ref.caller == nil && s.Check(p.ref.id, p.ref.incarnation) != "" })
}

// reapLoop ends idle sessions until Serve stops, looking every quarter of
// the idle timeout (so a session lives at most 1.25 times it).
func (g *Gateway) reapLoop() {
	t := time.NewTicker(g.cfg.SessionIdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-g.base.Done():
			return
		case <-t.C:
			g.reapIdle()
		}
	}
}

// reapIdle ends every session idle for longer than the idle timeout, by the
// gateway's clock, and audits each. It returns how many it ended.
func (g *Gateway) reapIdle() int {
	cutoff := g.now().Add(-g.cfg.SessionIdleTimeout)
	st := g.state.Load()
	n := 0
	for _, sess := range g.sessions.all() {
		if g.delegationLapsed(sess, st) {
			continue
		}
		if !sess.idleSince(cutoff) || !g.sessions.remove(sess) {
			continue
		}
		sess.cut()
		g.up.closeSession(sess)
		n++
		if sess.id == "" {
			continue // a stateless pseudo session: nothing the client holds
		}
		g.log.Info("ended idle session", "peer", sess.owner.String(), "session", sess.id)
		g.record(context.Background(), &audit.Event{
			Kind: audit.KindSession, Src: sess.owner.String(), Dst: st.Dst(), User: sess.user,
			Session: sess.id, Decision: audit.Allow, Reason: reason.Idle, Outcome: audit.OutcomeExpired,
			PolicyVersion: st.PolicyVersion(),
		})
	}
	return n
}

// connCut is a connection to close: its peer (src, for the log and the
// audit trail) lost access for why under st.
type connCut struct {
	tc  *trackedConn
	src string
	why reason.Code
	st  *admission.State
}

// closeConns closes the connections of peers that lost access, and
// audits each: the peer's streams end with it, and a stateless client
// has no session whose closing would otherwise show in the trail. The
// requests in flight on them are cut first, with the reason and the
// event's id, and given until cutGrace to answer so (cut.go).
func (g *Gateway) closeConns(cuts []connCut) {
	if len(cuts) == 0 {
		return
	}
	var waits []chan struct{}
	for _, c := range cuts {
		g.log.Info("closing connection of peer that lost access", "peer", c.src, "reason", c.why)
		// Read the address first: some transports (tsnet's) answer nil
		// once the connection is closed.
		addr := ""
		if a := c.tc.conn.RemoteAddr(); a != nil {
			addr = a.String()
		}
		user := ""
		if p := c.tc.peer(); p != nil {
			user = p.user
		}
		ev := &audit.Event{
			ID:   audit.NewID(),
			Kind: audit.KindConnection, Src: c.src, SrcAddr: addr, Dst: c.st.Dst(),
			Decision: audit.Deny, Reason: c.why, Outcome: audit.OutcomeClosed, PolicyVersion: c.st.PolicyVersion(), User: user,
		}
		g.record(context.Background(), ev)
		waits = append(waits, c.tc.cutRequests(&cutError{why: c.why, eventID: ev.ID})...)
	}
	if len(waits) > 0 {
		deadline := time.NewTimer(cutGrace)
	wait:
		for _, done := range waits {
			select {
			case <-done:
			case <-deadline.C:
				break wait
			}
		}
		deadline.Stop()
	}
	for _, c := range cuts {
		c.tc.conn.Close()
	}
}

// endSession removes a session and releases everything it holds.
func (g *Gateway) endSession(s *session) { g.endSessionFor(s, nil) }

// endSessionFor is endSession with a cause for its requests in flight
// (session.cutFor).
func (g *Gateway) endSessionFor(s *session, cause error) {
	if g.sessions.remove(s) {
		s.cutFor(cause)
		g.up.closeSession(s)
	}
}

// record hands e to the recorder, filling the common fields. It blocks as
// long as the recorder does. A failure is logged; callers that must not go
// on without the record use recordErr.
func (g *Gateway) record(ctx context.Context, e *audit.Event) {
	if err := g.recordErr(ctx, e); err != nil {
		g.log.Error("audit record failed", "event_id", e.ID, "kind", string(e.Kind), "err", err)
	}
}

// recordErr is record returning the recorder's error.
func (g *Gateway) recordErr(ctx context.Context, e *audit.Event) error {
	return admission.Record(ctx, g.cfg.Audit, e, g.now())
}
