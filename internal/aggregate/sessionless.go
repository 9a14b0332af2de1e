package aggregate

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// Sessionless requests over HTTP. The SDK serves MCP 2026-07-28 over
// Streamable HTTP only statelessly (each POST is the whole request, on a
// server session of its own that ends with it) and earlier versions only
// with sessions (Mcp-Session-Id). The aggregated HTTP endpoint serves
// both: a POST without Mcp-Session-Id whose Mcp-Protocol-Version header
// is 2026-07-28 or later goes to a stateless handler, everything else to
// the stateful one (sessionless). The SDK checks that a 2026-07-28
// request's header and its _meta protocolVersion agree, and its
// Mcp-Method header and body, so a request cannot pass as one kind on
// the way in and act as the other.
//
// A sessionless request's handler context ends with its HTTP request:
// the client dropping the request (the way a 2026-07-28 client cancels
// one) cancels the aggregator's request to the service, which the SDK
// passes on as notifications/cancelled, and so does the endpoint
// stopping (httpserver.Run ends every request's context first).
//
// Sessionless requests carry no identity of their client (every client
// of the endpoint holds the same bearer token), so they are bounded
// together, as one client session is: at most MaxSessionlessRequests
// POSTs in flight at once, of which subscriptions/listen streams, which
// last as long as the client keeps them open, take slots of their own
// (MaxSessionlessListens). A request past either is refused before the
// SDK reads it, with CodeLimited (too_many_requests).
const (
	// MaxSessionlessRequests is the most sessionless requests (calls,
	// lists, discovery, notifications) in flight at once on one HTTP
	// endpoint, as MaxInFlightPerClient is for one client session.
	MaxSessionlessRequests = MaxInFlightPerClient
	// MaxSessionlessListens is the most subscriptions/listen streams open
	// at once on one HTTP endpoint (a 2026-07-28 client keeps one open
	// for the list_changed notifications).
	MaxSessionlessListens = 64
	// maxRefusedPeek is how much of a refused request's body is read to
	// answer it under its JSON-RPC id.
	maxRefusedPeek = 64 << 10
)

// sessionless reports whether r goes to the stateless handler: a POST
// without a session whose protocol version is 2026-07-28 or later. A
// POST with a session, or of an earlier version (an initialize among
// them), and every GET and DELETE, go to the stateful one.
func sessionless(r *http.Request) bool {
	return r.Method == http.MethodPost && r.Header.Get("Mcp-Session-Id") == "" &&
		r.Header.Get("Mcp-Protocol-Version") >= protocol2026
}

// sessionlessKey marks the context of a sessionless HTTP request: its
// server session is the request's alone, bounded by the endpoint's gate,
// not as a client session (routing).
type sessionlessKey struct{}

// isSessionless reports whether ctx is a sessionless HTTP request's.
func isSessionless(ctx context.Context) bool { return ctx.Value(sessionlessKey{}) != nil }

// gate bounds the sessionless requests of one HTTP endpoint.
type gate struct{ requests, listens chan struct{} }

func newGate() *gate {
	return &gate{requests: make(chan struct{}, MaxSessionlessRequests), listens: make(chan struct{}, MaxSessionlessListens)}
}

// enter takes r's slot, or reports false when there is none free. The
// SDK refuses a 2026-07-28 request whose Mcp-Method header is not its
// method, so a listen cannot take a request's slot nor the reverse.
func (g *gate) enter(r *http.Request) (release func(), ok bool) {
	slots := g.requests
	if r.Header.Get("Mcp-Method") == "subscriptions/listen" {
		slots = g.listens
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, true
	default:
		return nil, false
	}
}

// serveSessionless serves r on the stateless handler h within g's bounds.
func (a *Aggregator) serveSessionless(w http.ResponseWriter, r *http.Request, g *gate, h http.Handler) {
	release, ok := g.enter(r)
	if !ok {
		a.refuseLimited(w, r)
		return
	}
	defer release()
	h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionlessKey{}, true)))
}

// refuseLimited answers a sessionless request past the endpoint's bounds
// with CodeLimited, as the stateful path answers a client session's: a
// JSON-RPC error under the request's id (HTTP 200, so that clients read
// it as the request's answer), or, for a notification or a body it
// cannot read, with HTTP 429.
func (a *Aggregator) refuseLimited(w http.ResponseWriter, r *http.Request) {
	a.log.Warn("aggregated endpoint: refused a sessionless request past the endpoint's bounds", "method", r.Header.Get("Mcp-Method"), "remote", r.RemoteAddr)
	var id jsonrpc.ID
	status := http.StatusTooManyRequests
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRefusedPeek))
	if err == nil {
		if msg, err := jsonrpc.DecodeMessage(body); err == nil {
			if req, ok := msg.(*jsonrpc.Request); ok && req.IsCall() {
				id, status = req.ID, http.StatusOK
			}
		}
	}
	e := limited(reason.TooManyRequests, fmt.Sprintf("already %d requests without a session in flight on this endpoint", MaxSessionlessRequests))
	if r.Header.Get("Mcp-Method") == "subscriptions/listen" {
		e = limited(reason.TooManyRequests, fmt.Sprintf("already %d subscriptions/listen streams open on this endpoint", MaxSessionlessListens))
	}
	je := e.(*jsonrpc.Error)
	b, _ := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Error: je})
	if status != http.StatusOK {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
