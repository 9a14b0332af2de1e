package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Approval holds. A tools/call allowed by a grant with an "approval" is
// held: the gateway registers it with the coordinator (POST
// controlapi.PathApprovals, with the gateway's own identity), long-polls
// for the decision, and then forwards the call (approved) or answers a
// denial: approval_denied, approval_timeout once the grant's
// approval_timeout has passed, approval_withdrawn when the caller cancelled
// it (notifications/cancelled naming it, or the HTTP request ending).
// A coordinator that cannot be reached to register the hold denies the
// call (approval_unavailable); one that cannot be reached while the call
// is held is asked again until the timeout. The call's one audit event
// records the final decision, with the approver (or denier) and the
// approval id in its detail.
//
// What a gateway holds is bounded: MaxHolds calls in all and
// MaxHoldsPerPeer per caller; one more is refused at once
// (too_many_holds). A held call also counts among its caller's requests in
// flight and keeps its session busy.
//
// An approved call is decided again under the policy in force when the
// approval arrives, and forwarded only if that policy still allows it.
//
// A client that declared a progress token is told that its call waits,
// with notifications/progress on an SSE answer (holdstream.go); a client
// whose session declared elicitation is asked once, on that answer,
// whether to keep waiting (holdelicit.go); a 2026-07-28 request that
// declares elicitation is answered input_required at once and its hold
// parked until the client calls again (holdinput.go); others see a slow
// tools/call.

// Approvals is how the gateway reaches the coordinator's approval API:
// controlclient.Client's Call (JSON in and out, the node's identity).
type Approvals interface {
	Call(ctx context.Context, method, path string, in, out any) error
}

// Default bounds of holds.
const (
	DefaultMaxHolds        = 64
	DefaultMaxHoldsPerPeer = 4
	// holdRetry is the pause after a failed long poll before the next.
	holdRetry = time.Second
	// withdrawTimeout bounds the withdrawal of a hold that ended.
	withdrawTimeout = 5 * time.Second
)

// holdTable counts and names the calls being held.
type holdTable struct {
	mu      sync.Mutex
	total   int
	perPeer map[string]int
	// byRequest finds a held call by its caller, session and JSON-RPC
	// id, for notifications/cancelled.
	byRequest map[holdKey]context.CancelCauseFunc
}

type holdKey struct {
	peer, session, id string
}

var errWithdrawn = errors.New("the caller cancelled the held call")

func (t *holdTable) enter(k holdKey, cancel context.CancelCauseFunc, maxTotal, maxPeer int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.total >= maxTotal || t.perPeer[k.peer] >= maxPeer {
		return false
	}
	if _, dup := t.byRequest[k]; dup {
		return false // one hold per request id
	}
	if t.perPeer == nil {
		t.perPeer, t.byRequest = map[string]int{}, map[holdKey]context.CancelCauseFunc{}
	}
	t.total++
	t.perPeer[k.peer]++
	t.byRequest[k] = cancel
	return true
}

func (t *holdTable) leave(k holdKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byRequest, k)
	t.free(k.peer)
}

// detach forgets request k but keeps its slot among the holds: a parked
// hold (holdinput.go) owns it until attach or drop.
func (t *holdTable) detach(k holdKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byRequest, k)
}

// attach gives the slot of a parked hold to request k, which leave then
// frees; false when k already holds one.
func (t *holdTable) attach(k holdKey, cancel context.CancelCauseFunc) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.byRequest[k]; dup {
		return false
	}
	if t.byRequest == nil {
		t.byRequest = map[holdKey]context.CancelCauseFunc{}
	}
	t.byRequest[k] = cancel
	return true
}

// drop frees the slot of a parked hold of peer that no request took.
func (t *holdTable) drop(peer string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.free(peer)
}

func (t *holdTable) free(peer string) {
	t.total--
	if t.perPeer[peer]--; t.perPeer[peer] <= 0 {
		delete(t.perPeer, peer)
	}
}

// cancel withdraws the hold of request k, if there is one.
func (t *holdTable) cancel(k holdKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.byRequest[k]; c != nil {
		c(errWithdrawn)
	}
}

// held reports how many calls are held (for tests).
func (t *holdTable) held() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

func holdKeyOf(x *exchange, id json.RawMessage) holdKey {
	return holdKey{peer: x.ev.Src, session: x.ev.Session, id: string(id)}
}

// cancelHeld withdraws the hold a notifications/cancelled names.
func (g *Gateway) cancelHeld(x *exchange, m *mcpwire.Message) {
	var p struct {
		RequestID json.RawMessage `json:"requestId"`
	}
	if json.Unmarshal(m.Params, &p) != nil || len(p.RequestID) == 0 {
		return
	}
	g.holds.cancel(holdKeyOf(x, p.RequestID))
}

// hold holds the allowed tools/call of x until a person decides it. It
// reports true when the call may be forwarded; otherwise it has answered
// the denial (or, for a client asked with input_required, the question:
// holdinput.go). resumed is the parked hold the request takes over, or nil
// for a call held anew.
//
// The writer it returns is where the call's answer goes: w, or the SSE
// stream that told the client the call waits (holdstream.go), which done
// ends; done must be called once the answer is written.
func (g *Gateway) hold(w http.ResponseWriter, r *http.Request, x *exchange, resumed *parkedHold) (_ http.ResponseWriter, done func(), ok bool) {
	done = func() {}
	ok = g.holdOn(&w, &done, r, x, resumed)
	return w, done, ok
}

func (g *Gateway) holdOn(wp *http.ResponseWriter, done *func(), r *http.Request, x *exchange, resumed *parkedHold) bool {
	w := *wp
	m, v := x.msg, x.v
	maxTotal, maxPeer := g.cfg.MaxHolds, g.cfg.MaxHoldsPerPeer
	if maxTotal <= 0 {
		maxTotal = DefaultMaxHolds
	}
	if maxPeer <= 0 {
		maxPeer = DefaultMaxHoldsPerPeer
	}
	if g.cfg.Approvals == nil {
		g.deny(w, r, x, http.StatusOK, m.ID, CodeDenied, reason.ApprovalUnavailable)
		return false
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	deadline := time.Now().Add(v.approvalTimeout)
	if resumed != nil {
		deadline = resumed.deadline
	}
	ctx, stop := context.WithDeadline(ctx, deadline)
	defer stop()
	k := holdKeyOf(x, m.ID)
	switch {
	case resumed != nil && !g.holds.attach(k, cancel):
		// Another held call of this session already has this id.
		g.unpark(resumed, "cancelled")
		g.deny(w, r, x, http.StatusBadRequest, m.ID, CodeRejected, reason.Malformed)
		return false
	case resumed == nil && !g.holds.enter(k, cancel, maxTotal, maxPeer):
		status := http.StatusTooManyRequests
		g.deny(w, r, x, status, m.ID, CodeLimited, reason.TooManyHolds)
		return false
	}
	parked := false
	defer func() {
		if parked {
			g.holds.detach(k)
		} else {
			g.holds.leave(k)
		}
	}()

	var a controlapi.Approval
	if resumed != nil {
		a = resumed.a
		if resumed.declined {
			cancel(errDeclined)
		}
	} else {
		req := controlapi.ApprovalRequest{Caller: x.ev.Src, Tool: v.tool, Grant: v.grant, Group: v.approval,
			PolicyVersion: v.version, Timeout: v.approvalTimeout, EventID: x.ev.ID, ArgsSHA256: v.argsHash}
		if err := g.cfg.Approvals.Call(ctx, http.MethodPost, controlapi.PathApprovals, req, &a); err != nil || a.ID == "" {
			g.log.Warn("approval hold not registered", "event_id", x.ev.ID, "err", err)
			why := reason.ApprovalUnavailable
			if context.Cause(ctx) == errWithdrawn {
				why = reason.ApprovalWithdrawn
			}
			g.deny(w, r, x, http.StatusOK, m.ID, CodeDenied, why)
			return false
		}
		g.log.Info("call held for approval", "approval", a.ID, "event_id", x.ev.ID, "tool", v.tool, "group", v.approval)
		if asksInput(r, m) {
			parked = g.park(w, r, x, a, deadline)
			return false
		}
	}
	waiting := "waiting for approval by " + v.approval + " (approval " + a.ID + ")"
	var el *holdElicit
	s := newHoldStream(w, r, m, x.sess != nil && x.sess.elicit)
	if s != nil {
		w, *wp, *done = s, s, s.finish
		s.progress(waiting)
		el = g.elicitHold(s, x, v.tool, v.approval, a.ID, cancel)
	}
	tell := func() {
		if s, ok := w.(*holdStream); ok {
			s.progress(waiting)
		}
	}
	path := controlapi.PathApprovals + "/" + url.PathEscape(a.ID) + "?wait=1"
	for a.Status == controlapi.ApprovalPending {
		var next controlapi.Approval
		err := g.cfg.Approvals.Call(ctx, http.MethodGet, path, nil, &next)
		if err == nil {
			a = next
			if a.Status == controlapi.ApprovalPending {
				tell()
			}
			continue
		}
		if ctx.Err() != nil {
			break
		}
		g.log.Warn("approval poll failed; asking again", "approval", a.ID, "err", err)
		t := time.NewTimer(holdRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	g.endElicit(s, el) // before the answer, on the same stream
	switch a.Status {
	case controlapi.ApprovalApproved:
		x.ev.Detail = "approved by " + a.DecidedBy + " (approval " + a.ID + ")"
		// The policy, and the tool's definition, may have changed while the
		// call was held: the policy in force must still allow the call and
		// its pins still match, or the approval does not help.
		p := *x.peer
		p.state = g.state.Load()
		if now := g.checkPinUnder(&p, x, m, g.decide(&p, m)); !now.allow {
			x.ev.Rule, x.ev.PolicyVersion = now.rule(), now.version
			g.deny(w, r, x, http.StatusOK, m.ID, now.code, now.reason)
			return false
		}
		return true
	case controlapi.ApprovalDenied:
		x.ev.Detail = "denied by " + a.DecidedBy + " (approval " + a.ID + ")"
		if a.Note != "" {
			x.ev.Detail += ": " + a.Note
		}
		g.deny(w, r, x, http.StatusOK, m.ID, CodeDenied, reason.ApprovalDenied)
		return false
	}
	// Still pending here: the hold ended on this side.
	why, withdraw := reason.ApprovalTimeout, "timeout"
	cause := context.Cause(ctx)
	if cause == errWithdrawn || cause == errDeclined || r.Context().Err() != nil {
		why, withdraw = reason.ApprovalWithdrawn, "cancelled"
	}
	if a.Status == controlapi.ApprovalPending {
		g.withdraw(r.Context(), a.ID, withdraw)
	}
	x.ev.Detail = "approval " + a.ID + " " + withdraw
	if cause == errDeclined {
		x.ev.Detail += " (the caller declined its elicitation)"
	}
	g.deny(w, r, x, http.StatusOK, m.ID, CodeDenied, why)
	return false
}
