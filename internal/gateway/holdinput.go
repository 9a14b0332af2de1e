package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// Holds told with input_required (MCP 2026-07-28, SEP-2322). 2026-07-28
// has no server-to-client requests: a server that needs the client's input
// answers the request with an input_required result and the client sends
// the request again with the answers. A stateless tools/call held for
// approval whose request declares form-mode elicitation in its client
// capabilities is answered at once that way: one elicitation/create input
// request keyed elicitIDPrefix and the approval id, with the message of
// holdelicit.go, and requestState that same key. Its event says allow,
// outcome held.
//
// The hold is then parked: registered at the coordinator, holding its slot
// among its caller's holds (MaxHoldsPerPeer, MaxHolds), with no request.
// The client's next tools/call whose requestState names it, from the same
// identity (id, incarnation and key), for the same tool with the same
// arguments (compared in canonical JSON, toolpin.Canonical), takes it over
// (one retry per hold): "decline" or "cancel" in its inputResponses
// withdraws it (approval_withdrawn), "accept" or no answer waits for the
// decision in that request like any hold, and an approved call reaches the
// upstream without requestState and inputResponses. A requestState with
// the prefix that names no parked hold of that caller, tool and arguments
// is refused (approval_unknown) and takes nothing; one without the prefix
// belongs to the upstream and passes untouched. A parked hold nobody takes
// is withdrawn and audited as approval_timeout parkGrace after its
// approval timeout, and at once when its caller loses access or the
// gateway stops.

// parkGrace is how long a parked hold outlives its approval timeout, so a
// retry that comes late hears approval_timeout rather than
// approval_unknown.
// It is Gateway.parkGrace, which tests shorten.
const parkGrace = 30 * time.Second

// parkedHold is a hold whose client was answered input_required.
type parkedHold struct {
	a        controlapi.Approval
	ref      peerRef
	tool     string
	args     string // argsDigest of the held call
	group    string
	deadline time.Time   // when the approval timeout ends (monotonic clock)
	ev       audit.Event // the held request's event
	timer    *time.Timer
	// declined is set by resumeHold: the retry's answer withdraws it.
	declined bool
}

// parkTable holds the parked holds by approval id. holdTable's bounds
// bound it: every parked hold keeps its slot there.
type parkTable struct {
	mu   sync.Mutex
	byID map[string]*parkedHold
}

func (t *parkTable) add(p *parkedHold) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.byID[p.a.ID]; dup {
		return false
	}
	if t.byID == nil {
		t.byID = map[string]*parkedHold{}
	}
	t.byID[p.a.ID] = p
	return true
}

// take removes and returns the parked hold id names if match accepts it;
// nil (taking nothing) otherwise.
func (t *parkTable) take(id string, match func(*parkedHold) bool) *parkedHold {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.byID[id]
	if p == nil || !match(p) {
		return nil
	}
	delete(t.byID, id)
	return p
}

// remove removes p and reports whether it was still parked.
func (t *parkTable) remove(p *parkedHold) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[p.a.ID] != p {
		return false
	}
	delete(t.byID, p.a.ID)
	return true
}

// all returns the parked holds.
func (t *parkTable) all() []*parkedHold {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*parkedHold, 0, len(t.byID))
	for _, p := range t.byID {
		out = append(out, p)
	}
	return out
}

// asksInput reports whether the held request m is asked with
// input_required: a 2026-07-28 request whose client capabilities declare
// form-mode elicitation.
func asksInput(r *http.Request, m *mcpwire.Message) bool {
	if r.Header.Get(mcpwire.HeaderProtocolVersion) < mcpwire.VersionStateless {
		return false
	}
	ok, err := m.DeclaresElicitation()
	return err == nil && ok
}

// argsDigest is the hex SHA-256 of a tools/call's arguments in canonical
// JSON ("" without arguments): a retry that re-encodes them (key order,
// whitespace, number spelling) names the same call, one that changes a
// value does not.
func argsDigest(m *mcpwire.Message) string {
	tc, err := m.ToolCall()
	if err != nil || tc.Arguments == nil {
		return ""
	}
	b, err := json.Marshal(tc.Arguments)
	if err == nil {
		b, err = toolpin.Canonical(b)
	}
	if err != nil {
		return "invalid"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// park answers the held call of x with input_required and parks its hold
// a until deadline (plus parkGrace). It reports whether it parked it;
// otherwise it has answered the refusal and withdrawn a.
func (g *Gateway) park(w http.ResponseWriter, r *http.Request, x *exchange, a controlapi.Approval, deadline time.Time) bool {
	v := x.v
	x.ev.Outcome = audit.OutcomeHeld
	x.ev.Detail = "held for approval " + a.ID + " by " + v.approval + "; the client was asked to call again (input_required)"
	x.ev.LatencyUS = g.now().Sub(x.start).Microseconds()
	p := &parkedHold{a: a, ref: x.peer.ref, tool: v.tool, args: argsDigest(x.msg), group: v.approval, deadline: deadline, ev: *x.ev}
	p.timer = time.AfterFunc(time.Until(deadline)+g.parkGrace, func() { g.expireParked(p) })
	if !g.parked.add(p) { // approval ids are random: never in practice
		p.timer.Stop()
		g.withdraw(r.Context(), a.ID, "cancelled")
		g.deny(w, r, x, http.StatusOK, x.msg.ID, CodeDenied, reason.ApprovalUnavailable)
		return false
	}
	x.recorded = true
	if err := g.recordErr(r.Context(), x.ev); err != nil {
		g.parked.remove(p)
		p.timer.Stop()
		g.withdraw(r.Context(), a.ID, "cancelled")
		writeRefusal(w, http.StatusServiceUnavailable, x.msg.ID, CodeRejected, reason.AuditFailed, x.ev.ID)
		return false
	}
	g.log.Info("held call answered input_required", "approval", a.ID, "event_id", x.ev.ID)

	type inputRequest struct {
		Method string           `json:"method"`
		Params holdElicitParams `json:"params"`
	}
	key := elicitIDPrefix + a.ID
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  struct {
			ResultType    string                  `json:"resultType"`
			InputRequests map[string]inputRequest `json:"inputRequests"`
			RequestState  string                  `json:"requestState"`
		} `json:"result"`
	}{JSONRPC: "2.0", ID: x.msg.ID, Result: struct {
		ResultType    string                  `json:"resultType"`
		InputRequests map[string]inputRequest `json:"inputRequests"`
		RequestState  string                  `json:"requestState"`
	}{mcpwire.ResultTypeInputRequired, map[string]inputRequest{
		key: {"elicitation/create", holdElicitation(v.tool, v.approval, a.ID)},
	}, key}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	x.outcome = x.ev.Outcome
	return true
}

// resumeHold finds the parked hold a retried tools/call takes over. It
// returns nil, true for a request that is not such a retry; nil, false
// when it has refused the request; the hold (no longer parked) otherwise,
// with x.body stripped of the retry's params.
func (g *Gateway) resumeHold(w http.ResponseWriter, r *http.Request, x *exchange) (*parkedHold, bool) {
	m := x.msg
	if m.Kind != mcpwire.KindRequest || m.Method != "tools/call" {
		return nil, true
	}
	in, err := m.InputRetry()
	if err != nil {
		g.deny(w, r, x, http.StatusOK, m.ID, CodeRejected, reason.Malformed)
		return nil, false
	}
	id, ours := strings.CutPrefix(in.State, elicitIDPrefix)
	if !ours {
		return nil, true
	}
	ref, tool, args := x.peer.ref, x.v.tool, argsDigest(m)
	p := g.parked.take(id, func(p *parkedHold) bool {
		return p.ref.same(ref) && p.tool == tool && p.args == args
	})
	if p == nil {
		g.deny(w, r, x, http.StatusOK, m.ID, CodeDenied, reason.ApprovalUnknown)
		return nil, false
	}
	p.timer.Stop()
	action := ""
	if raw, ok := in.Responses[elicitIDPrefix+p.a.ID]; ok {
		var res struct {
			Action string `json:"action"`
		}
		if json.Unmarshal(raw, &res) != nil {
			res.Action = "?"
		}
		action = res.Action
	}
	switch action {
	case "", "accept":
	case "decline", "cancel":
		p.declined = true
	default:
		g.unpark(p, "cancelled")
		x.ev.Detail = "approval " + p.a.ID + " cancelled: the retry's answer is not accept, decline or cancel"
		g.deny(w, r, x, http.StatusOK, m.ID, CodeRejected, reason.Malformed)
		return nil, false
	}
	b, err := mcpwire.WithoutInputRetry(x.body)
	if err != nil {
		g.unpark(p, "cancelled")
		g.deny(w, r, x, http.StatusOK, m.ID, CodeRejected, reason.Malformed)
		return nil, false
	}
	x.body = b
	return p, true
}

// unpark ends a hold taken from the park that will not be waited on:
// frees its slot and withdraws it at the coordinator.
func (g *Gateway) unpark(p *parkedHold, why string) {
	g.holds.drop(p.ev.Src) // the holdKey's peer
	g.withdraw(g.base, p.a.ID, why)
}

// expireParked ends p if nobody took it: withdrawn, and audited as timed
// out (or cancelled, when its caller lost access or the gateway stopped).
func (g *Gateway) expireParked(p *parkedHold) { g.endParked(p, reason.ApprovalTimeout, "timeout") }

func (g *Gateway) endParked(p *parkedHold, why reason.Code, withdraw string) {
	if !g.parked.remove(p) {
		return
	}
	p.timer.Stop()
	g.unpark(p, withdraw)
	ev := &audit.Event{
		Kind: audit.KindRequest, Src: p.ev.Src, SrcAddr: p.ev.SrcAddr, Dst: p.ev.Dst, Session: p.ev.Session, User: p.ev.User,
		Method: p.ev.Method, Tool: p.ev.Tool, ArgsSHA256: p.ev.ArgsSHA256, Rule: p.ev.Rule, PolicyVersion: p.ev.PolicyVersion,
		Decision: audit.Deny, Reason: why, Outcome: audit.OutcomeDenied,
		Detail: "approval " + p.a.ID + " " + withdraw + ": the client did not call again after input_required (event " + p.ev.ID + ")",
	}
	g.record(context.WithoutCancel(g.base), ev)
}

// endParkedOf ends the parked holds of callers gone tells are gone, as
// cancelled (approval_withdrawn).
func (g *Gateway) endParkedOf(gone func(*parkedHold) bool) {
	for _, p := range g.parked.all() {
		if gone(p) {
			g.endParked(p, reason.ApprovalWithdrawn, "cancelled")
		}
	}
}

// withdraw tells the coordinator a pending approval's call is over.
func (g *Gateway) withdraw(ctx context.Context, id, why string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
	defer cancel()
	if err := g.cfg.Approvals.Call(wctx, http.MethodPost, controlapi.PathApprovals+"/"+url.PathEscape(id)+"/withdraw",
		controlapi.ApprovalDecision{Reason: why}, nil); err != nil {
		g.log.Warn("approval withdrawal failed", "approval", id, "err", err)
	}
}
