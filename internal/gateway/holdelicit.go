package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Elicitation of a hold. A client whose session declared the elicitation
// capability (form mode) in its initialize is asked, once per hold, with a
// server-to-client elicitation/create on the held call's SSE answer
// (holdstream.go): "This call to TOOL waits for approval by GROUP (approval
// ID). Decline to withdraw it.", with an empty form. Its answer comes back
// as a POSTed JSON-RPC response, which the gateway takes itself and never
// forwards: "decline" or "cancel" withdraws the hold (approval_withdrawn,
// as notifications/cancelled does), "accept" or an error response leaves
// it waiting. The request's id is a string of the gateway's own,
// elicitIDPrefix and the approval id; a response with such an id is never
// forwarded, and one that names no elicitation the gateway waits on for
// this caller's session (another session, another identity, or one already
// answered or abandoned) is refused (approval_unknown). When the hold ends
// first, the gateway cancels its request (notifications/cancelled) on the
// stream before the call's answer.

// elicitIDPrefix starts the JSON-RPC id of every elicitation/create the
// gateway sends for a hold. The upstream's own requests to the client pass
// through untouched; the prefix is reserved for the gateway.
const elicitIDPrefix = "agentmesh-hold-"

// errDeclined ends a hold whose client declined its elicitation.
var errDeclined = errors.New("the caller declined the held call's elicitation")

// elicitTable holds the elicitations the gateway waits on, by request id.
// There is at most one per hold, so holdTable's bounds bound it too.
type elicitTable struct {
	mu   sync.Mutex
	byID map[string]*holdElicit
}

// holdElicit is one elicitation the gateway sent for a hold.
type holdElicit struct {
	id       string // the JSON-RPC id, without quotes
	approval string
	sess     *session
	ref      peerRef
	withdraw context.CancelCauseFunc
	answered bool // under elicitTable.mu
}

// add registers e; false when its id is already taken.
func (t *elicitTable) add(e *holdElicit) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.byID[e.id]; dup {
		return false
	}
	if t.byID == nil {
		t.byID = map[string]*holdElicit{}
	}
	t.byID[e.id] = e
	return true
}

// remove forgets e and reports whether it was still unanswered.
func (t *elicitTable) remove(e *holdElicit) (unanswered bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[e.id] == e {
		delete(t.byID, e.id)
	}
	return !e.answered
}

// take finds and consumes the elicitation id names for a response from x,
// or returns nil: none by that id, or not sent to x's session and identity.
func (t *elicitTable) take(id string, x *exchange) *holdElicit {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil || x.sess == nil || e.sess != x.sess || !e.ref.same(x.peer.ref) {
		return nil
	}
	delete(t.byID, id)
	e.answered = true
	return e
}

// pending reports how many elicitations the gateway waits on (for tests).
func (t *elicitTable) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// declaresElicitation reports whether an initialize request's client
// declared form-mode elicitation: capabilities.elicitation is an object
// that is empty (form, before 2025-11-25 split the modes) or has "form".
func declaresElicitation(m *mcpwire.Message) bool {
	if m == nil || m.Kind != mcpwire.KindRequest || m.Method != "initialize" {
		return false
	}
	var p struct {
		Capabilities struct {
			Elicitation map[string]json.RawMessage `json:"elicitation"`
		} `json:"capabilities"`
	}
	if json.Unmarshal(m.Params, &p) != nil || p.Capabilities.Elicitation == nil {
		return false
	}
	el := p.Capabilities.Elicitation
	if len(el) == 0 {
		return true
	}
	_, form := el["form"]
	return form
}

// elicitHold asks the client of x, on stream s, whether it still wants its
// held call; withdraw ends the hold. It returns the elicitation (to end
// with endElicit), or nil when the session did not declare elicitation.
func (g *Gateway) elicitHold(s *holdStream, x *exchange, tool, group, approval string, withdraw context.CancelCauseFunc) *holdElicit {
	if s == nil || x.sess == nil || !x.sess.elicit {
		return nil
	}
	e := &holdElicit{id: elicitIDPrefix + approval, approval: approval, sess: x.sess, ref: x.peer.ref, withdraw: withdraw}
	if !g.elicits.add(e) {
		return nil
	}
	b, _ := json.Marshal(struct {
		JSONRPC string           `json:"jsonrpc"`
		ID      string           `json:"id"`
		Method  string           `json:"method"`
		Params  holdElicitParams `json:"params"`
	}{JSONRPC: "2.0", ID: e.id, Method: "elicitation/create", Params: holdElicitation(tool, group, approval)})
	s.event(b)
	return e
}

// holdElicitParams are the params of the elicitation/create that asks a
// held call's client whether to keep waiting: a message and an empty form.
type holdElicitParams struct {
	Mode    string `json:"mode"`
	Message string `json:"message"`
	Schema  struct {
		Type       string   `json:"type"`
		Properties struct{} `json:"properties"`
	} `json:"requestedSchema"`
}

func holdElicitation(tool, group, approval string) holdElicitParams {
	p := holdElicitParams{Mode: "form",
		Message: "This call to " + tool + " waits for approval by " + group + " (approval " + approval + "). Decline to withdraw it."}
	p.Schema.Type = "object"
	return p
}

// endElicit forgets e when its hold ends; a request the client has not
// answered is cancelled on s.
func (g *Gateway) endElicit(s *holdStream, e *holdElicit) {
	if e == nil || !g.elicits.remove(e) {
		return
	}
	b, _ := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		Method  string `json:"method"`
		Params  struct {
			RequestID string `json:"requestId"`
			Reason    string `json:"reason"`
		} `json:"params"`
	}{JSONRPC: "2.0", Method: "notifications/cancelled", Params: struct {
		RequestID string `json:"requestId"`
		Reason    string `json:"reason"`
	}{e.id, "the approval hold ended"}})
	s.event(b)
}

// holdAnswer takes a client's response to a hold's elicitation/create: it
// reports false for any other message, which goes on as usual. A response
// it takes is answered here (202, or the refusal) and never forwarded.
func (g *Gateway) holdAnswer(w http.ResponseWriter, r *http.Request, x *exchange, m *mcpwire.Message) bool {
	if m.Kind != mcpwire.KindResponse {
		return false
	}
	var id string
	if json.Unmarshal(m.ID, &id) != nil || !strings.HasPrefix(id, elicitIDPrefix) {
		return false
	}
	e := g.elicits.take(id, x)
	if e == nil {
		g.deny(w, r, x, http.StatusForbidden, nil, CodeDenied, reason.ApprovalUnknown)
		return true
	}
	action := "error"
	if m.Error == nil {
		var res struct {
			Action string `json:"action"`
		}
		if json.Unmarshal(m.Result, &res) != nil {
			res.Action = ""
		}
		switch res.Action {
		case "accept", "decline", "cancel":
			action = res.Action
		default:
			// Consumed all the same: one answer per hold.
			g.deny(w, r, x, http.StatusBadRequest, nil, CodeRejected, reason.Malformed)
			return true
		}
	}
	x.ev.Decision, x.ev.Reason, x.ev.Outcome = audit.Allow, reason.Allowed, audit.OutcomeOfStatus(http.StatusAccepted)
	x.ev.Detail = "elicitation of approval " + e.approval + " answered: " + action
	x.ev.LatencyUS = g.now().Sub(x.start).Microseconds()
	if err := g.recordErr(r.Context(), x.ev); err != nil {
		x.recorded = true
		writeRefusal(w, http.StatusServiceUnavailable, nil, CodeRejected, reason.AuditFailed, x.ev.ID)
		return true
	}
	x.recorded = true
	if action == "decline" || action == "cancel" {
		e.withdraw(errDeclined)
	}
	w.WriteHeader(http.StatusAccepted)
	return true
}
