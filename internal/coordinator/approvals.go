package coordinator

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/store"
)

// Approval holds (README "Approval holds"). A gateway holding a call that
// needs a person's approval registers it here; an admin node in the
// grant's approval group approves or denies it; the gateway long-polls for
// the decision. Every step is audited by the coordinator: the hold, the
// decision with the approver's identity (or a refused attempt by a node
// outside the group), a withdrawal. The rows live in the registry's
// database, so that every coordinator of a cluster sees them; they are
// transient and not part of a backup.

// approvalsTable is the registry's step 5 (the same on both databases).
const approvalsTable = `
CREATE TABLE approvals (
	id             TEXT PRIMARY KEY,
	status         TEXT NOT NULL,
	gateway        TEXT NOT NULL,
	caller         TEXT NOT NULL,
	tool           TEXT NOT NULL,
	grant_index    BIGINT NOT NULL,
	grp            TEXT NOT NULL,
	policy_version TEXT NOT NULL,
	event_id       TEXT NOT NULL,
	args_sha256    TEXT NOT NULL,
	created_at     BIGINT NOT NULL,
	expires_at     BIGINT NOT NULL,
	decided_at     BIGINT NOT NULL DEFAULT 0,
	decided_by     TEXT NOT NULL DEFAULT '',
	note           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX approvals_status ON approvals(status, created_at);
`

// Bounds on what gateways may make the coordinator hold.
const (
	// MaxPendingApprovalsPerGateway caps the pending approvals of one
	// gateway; one more is refused (the gateway denies the call).
	MaxPendingApprovalsPerGateway = 256
	// approvalRetention is how long a decided approval stays listed.
	approvalRetention = 7 * 24 * time.Hour
	// approvalRecheck is how often a long poll rereads the database, for
	// decisions made at another coordinator of a cluster.
	approvalRecheck = time.Second
	// maxApprovalList caps a listing.
	maxApprovalList = 500
)

// approvalBoard wakes long polls when this coordinator decides.
type approvalBoard struct {
	mu      sync.Mutex
	changed chan struct{}
}

func (b *approvalBoard) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

func (b *approvalBoard) wake() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

func (c *Coordinator) approvalRoutes(mux *http.ServeMux, body func(int64, handler) handler) {
	const small = controlapi.MaxBody
	p := controlapi.PathApprovals
	mux.HandleFunc("POST "+p, c.node(body(small, c.handleApprovalHold)))
	mux.HandleFunc("GET "+p+"/{id}", c.node(c.handleApprovalWait))
	mux.HandleFunc("POST "+p+"/{id}/withdraw", c.node(body(small, c.handleApprovalWithdraw)))
	mux.HandleFunc("GET "+p, c.admin(c.handleApprovalList))
	mux.HandleFunc("POST "+p+"/{id}/approve", c.admin(body(small, c.handleApprovalDecide)))
	mux.HandleFunc("POST "+p+"/{id}/deny", c.admin(body(small, c.handleApprovalDecide)))
}

func newApprovalID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("coordinator: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

func validApprovalID(id string) bool {
	if len(id) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func (c *Coordinator) currentPolicy() *policy.Policy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pol
}

// handleApprovalHold registers a held call for the gateway making the
// request. The grant it names must require approval by the group it names
// in the coordinator's current policy.
func (c *Coordinator) handleApprovalHold(w http.ResponseWriter, r *http.Request, who caller) {
	if who.id.Kind != identity.KindTool {
		writeError(w, http.StatusForbidden, reason.NotServingKind, "only a tool node's gateway holds calls for approval")
		return
	}
	var req controlapi.ApprovalRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed approval request: "+err.Error())
		return
	}
	if req.Tool == "" || len(req.Tool) > 1024 || req.Caller == "" || len(req.Caller) > 1024 || len(req.EventID) > 128 ||
		len(req.ArgsSHA256) > 64 || len(req.PolicyVersion) > 64 ||
		req.Timeout < policy.MinApprovalTimeout || req.Timeout > policy.MaxApprovalTimeout {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed approval request")
		return
	}
	if group, _ := c.currentPolicy().GrantApproval(req.Grant); group == "" || group != req.Group {
		writeError(w, http.StatusConflict, reason.NotGranted, "the current policy's grant "+strconv.Itoa(req.Grant)+" does not require approval by "+req.Group)
		return
	}
	now := c.now()
	gw := who.actor()
	a := controlapi.Approval{ID: newApprovalID(), Status: controlapi.ApprovalPending, Gateway: gw, ApprovalRequest: req,
		CreatedAt: now.UTC(), ExpiresAt: now.Add(req.Timeout).UTC()}
	err := c.reg.addApproval(r.Context(), a, now)
	if errors.Is(err, errConflict) {
		writeError(w, http.StatusTooManyRequests, reason.TooManyHolds, fmt.Sprintf("this gateway has %d approvals pending", MaxPendingApprovalsPerGateway))
		return
	} else if err != nil {
		c.internalError(w, r, "approvals: hold", err)
		return
	}
	ev := c.event(audit.KindAdmin, gw, "coordinator")
	ev.SrcAddr, ev.Action, ev.Target, ev.Decision = who.addr, "approvals.hold", a.ID, audit.Allow
	ev.Tool, ev.Rule, ev.PolicyVersion = req.Tool, strconv.Itoa(req.Grant), req.PolicyVersion
	ev.Detail = "call by " + req.Caller + " held for approval by " + req.Group + " (gateway event " + req.EventID + ")"
	c.record(r.Context(), ev)
	writeJSON(w, http.StatusOK, a)
}

// handleApprovalWait answers the approval's state: at once when it is
// decided (or wait is not set), else when it is decided or after at most
// controlapi.ApprovalLongPoll. Only the gateway that holds it may ask.
func (c *Coordinator) handleApprovalWait(w http.ResponseWriter, r *http.Request, who caller) {
	id := r.PathValue("id")
	deadline := time.NewTimer(controlapi.ApprovalLongPoll)
	defer deadline.Stop()
	for {
		changed := c.approvals.wait()
		a, ok := c.ownApproval(w, r, who, id)
		if !ok {
			return
		}
		if a.Status != controlapi.ApprovalPending || r.URL.Query().Get("wait") == "" {
			writeJSON(w, http.StatusOK, a)
			return
		}
		recheck := time.NewTimer(approvalRecheck)
		select {
		case <-changed:
		case <-recheck.C:
		case <-deadline.C:
			recheck.Stop()
			writeJSON(w, http.StatusOK, a)
			return
		case <-r.Context().Done():
			recheck.Stop()
			return
		}
		recheck.Stop()
	}
}

// lookupApproval reads approval id; an id that cannot be one is
// errNotFound, as an unknown one is.
func (c *Coordinator) lookupApproval(ctx context.Context, id string) (controlapi.Approval, error) {
	if !validApprovalID(id) {
		return controlapi.Approval{}, errNotFound
	}
	return c.reg.approval(ctx, id, c.now())
}

// ownApproval reads approval id for the gateway who, answering the error
// itself when there is none of that gateway's.
func (c *Coordinator) ownApproval(w http.ResponseWriter, r *http.Request, who caller, id string) (controlapi.Approval, bool) {
	a, err := c.lookupApproval(r.Context(), id)
	if errors.Is(err, errNotFound) || err == nil && a.Gateway != who.actor() {
		writeError(w, http.StatusNotFound, reason.NotFound, "no approval "+id+" of this node")
		return a, false
	} else if err != nil {
		c.internalError(w, r, "approvals: read", err)
		return a, false
	}
	return a, true
}

// handleApprovalWithdraw ends a pending approval whose call the gateway no
// longer holds: its caller cancelled or left (reason "cancelled"), or the
// gateway's timeout ran out (reason "timeout").
func (c *Coordinator) handleApprovalWithdraw(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.ApprovalDecision
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed withdrawal: "+err.Error())
		return
	}
	status := controlapi.ApprovalWithdrawn
	if req.Reason == "timeout" {
		status = controlapi.ApprovalTimedOut
	}
	a, ok := c.ownApproval(w, r, who, r.PathValue("id"))
	if !ok {
		return
	}
	if err := c.reg.decideApproval(r.Context(), a.ID, status, "", "", c.now()); err == nil {
		ev := c.event(audit.KindAdmin, who.actor(), "coordinator")
		ev.SrcAddr, ev.Action, ev.Target, ev.Decision = who.addr, "approvals."+status, a.ID, audit.Allow
		ev.Tool, ev.Detail = a.Tool, "call by "+a.Caller
		c.record(r.Context(), ev)
		c.approvals.wake()
	} else if !errors.Is(err, errConflict) {
		c.internalError(w, r, "approvals: withdraw", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handleApprovalList(w http.ResponseWriter, r *http.Request, who caller) {
	all := r.URL.Query().Get("all") != ""
	list, err := c.reg.approvals(r.Context(), all, c.now())
	if err != nil {
		c.internalError(w, r, "approvals: list", err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// handleApprovalDecide approves or denies a pending approval, for an admin
// node in the grant's approval group (by the current policy and the
// node's registered tags). Every attempt is audited, a refused one too.
func (c *Coordinator) handleApprovalDecide(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.ApprovalDecision
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil || len(req.Reason) > controlapi.MaxApprovalNote {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed approval decision")
		return
	}
	approve := r.Pattern == "POST "+controlapi.PathApprovals+"/{id}/approve"
	action, status := "approvals.deny", controlapi.ApprovalDenied
	if approve {
		action, status = "approvals.approve", controlapi.ApprovalApproved
	}
	id := r.PathValue("id")
	a, err := c.lookupApproval(r.Context(), id)
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, "no approval "+id)
		return
	} else if err != nil {
		c.internalError(w, r, "approvals: read", err)
		return
	}
	ev := c.event(audit.KindAdmin, who.actor(), "coordinator")
	ev.SrcAddr, ev.Action, ev.Target = who.addr, action, a.ID
	ev.Tool, ev.Rule, ev.PolicyVersion = a.Tool, strconv.Itoa(a.Grant), a.PolicyVersion
	ev.Detail = "call by " + a.Caller + " at " + a.Gateway + ", approval group " + a.Group
	if req.Reason != "" {
		ev.Detail += ": " + req.Reason
	}
	approver := policy.Node{Kind: who.id.Kind, Name: who.id.Name, Tags: who.node.Tags}
	if !c.currentPolicy().Approves(a.Group, approver) {
		ev.Decision, ev.Reason, ev.Outcome = audit.Deny, reason.NotApprover, audit.OutcomeRefused
		c.record(r.Context(), ev)
		writeError(w, http.StatusForbidden, reason.NotApprover, who.actor()+" is not a member of "+a.Group)
		return
	}
	err = c.reg.decideApproval(r.Context(), a.ID, status, who.actor(), req.Reason, c.now())
	if errors.Is(err, errConflict) {
		ev.Decision, ev.Reason, ev.Outcome = audit.Deny, reason.ApprovalDecided, audit.OutcomeRejected
		c.record(r.Context(), ev)
		writeError(w, http.StatusConflict, reason.ApprovalDecided, "approval "+a.ID+" is "+a.Status)
		return
	} else if err != nil {
		c.internalError(w, r, "approvals: decide", err)
		return
	}
	ev.Decision = audit.Allow
	c.record(r.Context(), ev)
	c.approvals.wake()
	a, err = c.reg.approval(r.Context(), a.ID, c.now())
	if err != nil {
		c.internalError(w, r, "approvals: read", err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

const approvalColumns = `id, status, gateway, caller, tool, grant_index, grp, policy_version, event_id, args_sha256,
	created_at, expires_at, decided_at, decided_by, note`

func scanApproval(s interface{ Scan(...any) error }, now time.Time) (controlapi.Approval, error) {
	var a controlapi.Approval
	var grant int64
	var created, expires, decided int64
	err := s.Scan(&a.ID, &a.Status, &a.Gateway, &a.Caller, &a.Tool, &grant, &a.Group, &a.PolicyVersion, &a.EventID, &a.ArgsSHA256,
		&created, &expires, &decided, &a.DecidedBy, &a.Note)
	if err != nil {
		return a, err
	}
	a.Grant = int(grant)
	a.CreatedAt, a.ExpiresAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
	a.Timeout = a.ExpiresAt.Sub(a.CreatedAt)
	if decided != 0 {
		a.DecidedAt = time.Unix(0, decided).UTC()
	}
	if a.Status == controlapi.ApprovalPending && !now.Before(a.ExpiresAt) {
		a.Status = controlapi.ApprovalTimedOut // nobody may decide it any more
	}
	return a, nil
}

// addApproval inserts a, unless its gateway has
// MaxPendingApprovalsPerGateway pending already (errConflict). It forgets
// approvals decided or expired longer than approvalRetention ago.
func (r *registry) addApproval(ctx context.Context, a controlapi.Approval, now time.Time) error {
	tx, err := r.db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM approvals WHERE expires_at < $1`, now.Add(-approvalRetention).UnixNano()); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM approvals WHERE gateway = $1 AND status = $2 AND expires_at > $3`,
		a.Gateway, controlapi.ApprovalPending, now.UnixNano()).Scan(&n); err != nil {
		return err
	}
	if n >= MaxPendingApprovalsPerGateway {
		return errConflict
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO approvals(id, status, gateway, caller, tool, grant_index, grp, policy_version, event_id, args_sha256, created_at, expires_at)
		VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		a.ID, a.Status, a.Gateway, a.Caller, a.Tool, int64(a.Grant), a.Group, a.PolicyVersion, a.EventID, a.ArgsSHA256,
		a.CreatedAt.UnixNano(), a.ExpiresAt.UnixNano()); err != nil {
		return err
	}
	return tx.Commit()
}

func (r *registry) approval(ctx context.Context, id string, now time.Time) (controlapi.Approval, error) {
	a, err := scanApproval(r.db.QueryRowContext(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = $1`, id), now)
	if errors.Is(err, sql.ErrNoRows) {
		return a, errNotFound
	}
	return a, err
}

// approvals lists pending approvals, oldest first; all lists the newest
// of every status instead.
func (r *registry) approvals(ctx context.Context, all bool, now time.Time) ([]controlapi.Approval, error) {
	q := `SELECT ` + approvalColumns + ` FROM approvals WHERE status = $1 AND expires_at > $2 ORDER BY created_at LIMIT ` + strconv.Itoa(maxApprovalList)
	args := []any{controlapi.ApprovalPending, now.UnixNano()}
	if all {
		q = `SELECT ` + approvalColumns + ` FROM approvals ORDER BY created_at DESC LIMIT ` + strconv.Itoa(maxApprovalList)
		args = nil
	}
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []controlapi.Approval{}
	for rows.Next() {
		a, err := scanApproval(rows, now)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// decideApproval moves a pending, unexpired approval to status; errConflict
// when it is not pending any more.
func (r *registry) decideApproval(ctx context.Context, id, status, by, note string, now time.Time) error {
	res, err := r.db.ExecContext(ctx, `UPDATE approvals SET status = $1, decided_by = $2, note = $3, decided_at = $4
		WHERE id = $5 AND status = $6 AND expires_at > $4`, status, by, note, now.UnixNano(), id, controlapi.ApprovalPending)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errConflict
	}
	return nil
}
