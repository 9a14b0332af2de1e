package gateway

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Defaults of the Config caps. A real agent opens one session per MCP
// client connection and ends it when it leaves; sixteen processes and
// sixty-four sessions of one identity at once are far beyond that, yet
// small enough that a peer looping on initialize cannot exhaust the host.
const (
	DefaultMaxRequestsPerPeer  = budget.DefaultRequestsPerPeer
	DefaultMaxSessionsPerPeer  = 64
	DefaultMaxProcessesPerPeer = 16
	DefaultMaxProcesses        = 128
)

// caps bounds what peers can make the gateway hold (see Config and the
// threat model in doc.go).
type caps struct {
	requests  *budget.Budget // requests in flight, per peer
	sessions  *budget.Budget // open sessions, per peer
	processes *budget.Budget // stdio upstream processes, per peer and in all
	bodies    *budget.BodyReader
}

// newCaps fills cfg's zero caps with the defaults and builds the budgets.
func newCaps(cfg *Config, maxBytes int64) (caps, error) {
	if cfg.MaxRequestsPerPeer < 0 || cfg.MaxSessionsPerPeer < 0 || cfg.MaxProcessesPerPeer < 0 || cfg.MaxProcesses < 0 {
		return caps{}, fmt.Errorf("%w: request, session and process caps must not be negative", ErrConfig)
	}
	if cfg.MaxRequestsPerPeer == 0 {
		cfg.MaxRequestsPerPeer = DefaultMaxRequestsPerPeer
	}
	if cfg.MaxSessionsPerPeer == 0 {
		cfg.MaxSessionsPerPeer = DefaultMaxSessionsPerPeer
	}
	if cfg.MaxProcessesPerPeer == 0 {
		cfg.MaxProcessesPerPeer = DefaultMaxProcessesPerPeer
	}
	if cfg.MaxProcesses == 0 {
		cfg.MaxProcesses = max(DefaultMaxProcesses, cfg.MaxProcessesPerPeer)
	}
	bodies, err := budget.NewBodyReader(maxBytes, cfg.Bodies)
	if err != nil {
		return caps{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return caps{
		requests:  budget.New(0, int64(cfg.MaxRequestsPerPeer)),
		sessions:  budget.New(0, int64(cfg.MaxSessionsPerPeer)),
		processes: budget.New(int64(cfg.MaxProcesses), int64(cfg.MaxProcessesPerPeer)),
		bodies:    bodies,
	}, nil
}

// budgetKey names p in the budgets: its certificate identity, or its
// Identifier key (kept apart by a prefix no SPIFFE ID has).
func (p peerRef) budgetKey() string {
	if p.caller != nil {
		return "caller " + p.key
	}
	return p.id.String()
}

// limitStatus is the HTTP status of a refusal for err from a budget: the
// peer is over its own share (429), or the gateway is full (503).
func limitStatus(err error) int {
	if errors.Is(err, budget.ErrExhausted) {
		return http.StatusServiceUnavailable
	}
	return http.StatusTooManyRequests
}

// admitRequest counts x among its peer's requests in flight until the
// request is done. It answers a refusal itself (the body left unread) and
// returns false when the request must stop.
func (g *Gateway) admitRequest(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	l, err := g.caps.requests.Take(x.peer.ref.budgetKey(), 1)
	if err != nil {
		g.log.Info("request refused", "peer", x.ev.Src, "err", err)
		if r.Method != http.MethodPost {
			x.ev.Method = r.Method // a POST's method is in the unread body
		}
		budget.SkipBody(w, r)
		g.deny(w, r, x, limitStatus(err), nil, CodeLimited, reason.TooManyRequests)
		return false
	}
	x.inFlight = l
	return true
}

// readBody reads the POST body of x within the body budget, holding its
// bytes until the request is done. It answers a refusal itself and returns
// false when the request must stop.
func (g *Gateway) readBody(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	body, lease, err := g.caps.bodies.Read(w, r, x.peer.ref.budgetKey())
	switch {
	case err == nil:
		x.body, x.bodyLease = body, lease
		return true
	case errors.Is(err, budget.ErrTooLarge):
		g.deny(w, r, x, http.StatusRequestEntityTooLarge, nil, CodeRejected, reason.TooLarge)
	case errors.Is(err, budget.ErrPeerShare), errors.Is(err, budget.ErrExhausted):
		g.log.Info("request body over budget", "peer", x.ev.Src, "err", err)
		w.Header().Set("Retry-After", "1")
		g.deny(w, r, x, limitStatus(err), nil, CodeLimited, reason.OverBudget)
	case errors.Is(err, budget.ErrTimeout):
		g.deny(w, r, x, http.StatusRequestTimeout, nil, CodeLimited, reason.BodyTimeout)
	default:
		// The client went away or broke the body: nobody to answer, but
		// the attempt is recorded.
		x.outcome = audit.OutcomeClientGone
		x.ev.Decision, x.ev.Reason = audit.Deny, reason.IncompleteBody
	}
	return false
}

// sessionSlots are what a session being created holds until it has ended:
// its place among the peer's sessions and, for a stdio upstream, its
// process, which counts until it has exited.
type sessionSlots struct {
	session, process *budget.Lease
}

func (s *sessionSlots) release() {
	s.session.Release()
	s.process.Release()
}

// reserveSession takes the slots of the session an initialize without a
// session id may create, before it reaches the upstream (no process starts
// over a cap). It answers a refusal itself and returns false when the
// request must stop.
func (g *Gateway) reserveSession(w http.ResponseWriter, r *http.Request, x *exchange) bool {
	m := x.msg
	if x.sess != nil || m.Kind != mcpwire.KindRequest || m.Method != "initialize" {
		return true
	}
	key := x.peer.ref.budgetKey()
	take := func(b *budget.Budget, why reason.Code) *budget.Lease {
		l, err := b.Take(key, 1)
		if err != nil {
			g.log.Info("session refused", "peer", x.ev.Src, "reason", why, "err", err)
			g.deny(w, r, x, limitStatus(err), m.ID, CodeLimited, why)
		}
		return l
	}
	if x.slots.session = take(g.caps.sessions, reason.TooManySessions); x.slots.session == nil {
		return false
	}
	if _, stdio := g.up.(*commandUpstream); !stdio {
		return true
	}
	x.slots.process = take(g.caps.processes, reason.TooManyProcesses)
	return x.slots.process != nil
}
