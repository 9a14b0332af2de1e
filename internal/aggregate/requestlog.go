package aggregate

import (
	"context"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Log messages for 2026-07-28 clients. From 2026-07-28 on there is no
// session and no logging/setLevel: a request asks for the log messages
// of its own handling by the level in its _meta
// (io.modelcontextprotocol/logLevel), and gets them on its own response
// stream. A service's messages on the session a request shares with
// others (the backend's) belong to no single request, so such a request
// (a tools/call, prompts/get or resources/read) goes to the service over
// a session of its own instead: opened for it with the level it asked
// for, closed once its answer is in. Every message on that session is
// the request's, and goes to its client, filtered by its level, named
// SERVICE or SERVICE/LOGGER as on a client's own session.
//
// Such a session speaks requestSessionProtocol, the latest version with
// sessions and logging/setLevel. It costs the service a session per request
// (a gateway whose MCP server is a stdio command starts a process for
// it), which a client pays only when it asks for log messages; at most
// MaxRequestSessions are open at once. A request past that, or whose
// session cannot be opened, goes over the shared session as a request
// without a level does: answered, without the service's log messages.

// MaxRequestSessions is the most sessions to services open at once for
// single 2026-07-28 requests that asked for log messages.
const MaxRequestSessions = 64

// requestSessionProtocol is the protocol version of a request's own
// session: the latest with sessions and logging/setLevel.
const requestSessionProtocol = "2025-11-25"

// logLevels are the levels MCP defines, least severe first.
var logLevels = []mcp.LoggingLevel{"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}

// requestLogLevel is the log level a request of ss whose _meta is meta
// asks for: that of a 2026-07-28 request (ss has no sessions of its own
// to services), or "" for none.
func requestLogLevel(ss *mcp.ServerSession, meta mcp.Meta) mcp.LoggingLevel {
	if ss == nil || ownSessions(ss) {
		return ""
	}
	l, _ := meta[mcp.MetaKeyLogLevel].(string)
	if !slices.Contains(logLevels, mcp.LoggingLevel(l)) {
		return ""
	}
	return mcp.LoggingLevel(l)
}

// sessionForRequest is sessionFor for a request of ss whose _meta is
// meta, and the function to call once its answer is in: a 2026-07-28
// request that asks for log messages gets a session of its own, whose
// messages go to the request's stream (ctx is the request's).
func (b *backend) sessionForRequest(ctx context.Context, ss *mcp.ServerSession, meta mcp.Meta) (*mcp.ClientSession, func(), error) {
	level := requestLogLevel(ss, meta)
	shared, err := b.sessionFor(ctx, ss)
	if err != nil || level == "" {
		return shared, func() {}, err
	}
	select {
	case b.a.requestSessions <- struct{}{}:
	default:
		b.a.log.Warn("aggregate: too many requests with a log level at once; this one goes without the service's log messages", "service", b.svc.Name, "max", MaxRequestSessions)
		return shared, func() {}, nil
	}
	s, err := b.openRequestSession(ctx, ss, level)
	if err != nil {
		<-b.a.requestSessions
		b.a.log.Warn("aggregate: could not open a session for a request's log messages; it goes without them", "service", b.svc.Name, "err", err)
		return shared, func() {}, nil
	}
	// It ends with the request, or before when the service leaves.
	// Closing waits for the messages the service sent before its
	// answer to be handled, so they reach the client before it.
	gone := context.AfterFunc(b.ctx, func() { s.Close() })
	return s, func() {
		if gone() {
			s.Close()
		}
		<-b.a.requestSessions
	}, nil
}

// openRequestSession connects a session to b's service for one request
// of ss (whose context is ctx), at level.
func (b *backend) openRequestSession(ctx context.Context, ss *mcp.ServerSession, level mcp.LoggingLevel) (*mcp.ClientSession, error) {
	svc := b.svc.Name
	// As the backend's shared session: what a service asks of a
	// 2026-07-28 client comes back in the result.
	opts := b.sharedOptions()
	opts.LoggingMessageHandler = func(_ context.Context, req *mcp.LoggingMessageRequest) {
		if req.Params == nil {
			return
		}
		if err := ss.Log(ctx, serviceLog(svc, req.Params)); err != nil {
			b.a.log.Debug("aggregate: a service's log message did not reach the client", "service", svc, "err", err)
		}
	}
	cl := b.newClient(opts)
	tr, err := b.a.transport(b.svc)
	if err != nil {
		return nil, err
	}
	// Not under the request's context, but ending with it: the SDK's
	// HTTP client takes the protocol version of an initialize's
	// Mcp-Protocol-Version header from its context, where the SDK's
	// server put the request's (2026-07-28, refused on an initialize).
	cctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	s, err := cl.Connect(cctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: requestSessionProtocol})
	if err != nil {
		return nil, err
	}
	if err := s.SetLoggingLevel(cctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// serviceLog is p as the aggregated endpoint passes it on: its logger
// named SERVICE or SERVICE/LOGGER, without the service's _meta.
func serviceLog(svc string, p *mcp.LoggingMessageParams) *mcp.LoggingMessageParams {
	q := *p
	q.Meta = nil
	q.Logger = svc
	if p.Logger != "" {
		q.Logger = svc + "/" + p.Logger
	}
	return &q
}
