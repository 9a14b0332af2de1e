package coordinator

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/textdiff"
)

// Shadow mode. A shadow policy is a candidate applied next to the active
// policy: validated as an apply is, stored and numbered in its own series
// (shadow_policies; events name version N "shadow-N"), projected for each
// gateway as the active policy is, and sent in the netmap's Shadow. Gateways
// evaluate it on every request they decide, enforce the active decision,
// and record the shadow's decision in the request's event when the two
// differ. Status summarises those events from the audit trail; promote
// makes the shadow the active policy (a policy.apply of its document) and
// clears it in the same transaction; clear just clears it.
//
// The table is append-only, like policies: clearing or promoting adds a
// row with an empty document, so the newest row is the current shadow and
// the history of what was shadowed when stays.

// shadowTable is the registry's step 7 (the same on both databases).
const shadowTable = `
CREATE TABLE shadow_policies (
	version    BIGINT PRIMARY KEY,
	document   TEXT NOT NULL,
	applied_by TEXT NOT NULL,
	applied_at BIGINT NOT NULL,
	note       TEXT NOT NULL DEFAULT ''
);
`

// shadowSkew is how far before a shadow's apply time status looks for its
// events: gateways stamp events by their own clocks.
const shadowSkew = 5 * time.Minute

// addShadow stores doc as the newest shadow version ("" clears the
// shadow), and the memory copy with it, as addPolicy does.
func (r *registry) addShadow(ctx context.Context, doc, by, note string, now time.Time) (int64, error) {
	return r.addVersion(ctx, shadowTableName, changedShadow, &r.mem.shadow, doc, by, note, now)
}

// promoteShadow makes the current shadow the newest policy version and
// clears the shadow, in one transaction: either both happen or neither.
// It returns the new policy version and the shadow promoted; errNotFound
// when there is no shadow.
func (r *registry) promoteShadow(ctx context.Context, by string, now time.Time) (int64, controlapi.PolicyVersion, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tx, err := r.db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return 0, controlapi.PolicyVersion{}, err
	}
	defer tx.Rollback()
	sh, err := scanShadow(tx.QueryRowContext(ctx, shadowQuery))
	if err != nil {
		return 0, sh, err
	}
	if sh.Document == "" {
		return 0, sh, errNotFound
	}
	note := "promoted from " + netmap.ShadowVersion(sh.Version)
	v, err := insertVersion(ctx, tx, policyTableName, sh.Document, by, note, now)
	if err != nil {
		return 0, sh, err
	}
	sv, err := insertVersion(ctx, tx, shadowTableName, "", by, "promoted to v"+strconv.FormatInt(v, 10), now)
	if err != nil {
		return 0, sh, err
	}
	if err := r.db.Notify(ctx, tx, changeChannel, r.notifyAs+" "+changedPolicy); err != nil {
		return 0, sh, err
	}
	if err := r.db.Notify(ctx, tx, changeChannel, r.notifyAs+" "+changedShadow); err != nil {
		return 0, sh, err
	}
	if err := tx.Commit(); err != nil {
		r.doubt()
		return 0, sh, err
	}
	at := time.Unix(0, now.UnixNano()).UTC()
	r.mem.policy = controlapi.PolicyVersion{Version: v, Document: sh.Document, AppliedBy: by, AppliedAt: at, Note: note}
	r.mem.shadow = controlapi.PolicyVersion{Version: sv, AppliedBy: by, AppliedAt: at, Note: "promoted to v" + strconv.FormatInt(v, 10)}
	r.mem.seq++
	return v, sh, nil
}

const shadowQuery = `SELECT version, document, applied_by, applied_at, note FROM shadow_policies ORDER BY version DESC LIMIT 1`

// scanShadow reads one shadow row; no row is a zero PolicyVersion.
func scanShadow(row *sql.Row) (controlapi.PolicyVersion, error) {
	var p controlapi.PolicyVersion
	var at int64
	err := row.Scan(&p.Version, &p.Document, &p.AppliedBy, &at, &p.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return controlapi.PolicyVersion{}, nil
	}
	p.AppliedAt = time.Unix(0, at).UTC()
	return p, err
}

// shadow returns the newest shadow row (Document "" when the shadow was
// cleared; a zero PolicyVersion when there was never one).
func (r *registry) shadow(ctx context.Context) (controlapi.PolicyVersion, error) {
	return scanShadow(r.db.QueryRowContext(ctx, shadowQuery))
}

// refreshShadow rereads the newest shadow, which another coordinator
// changed.
func (r *registry) refreshShadow(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.shadow(ctx)
	if err != nil {
		r.doubt()
		return
	}
	if p.Version != r.mem.shadow.Version {
		r.mem.shadow = p
		r.mem.seq++
	}
}

// currentShadow is the memory copy's shadow, zero when there is none.
func (r *registry) currentShadow() controlapi.PolicyVersion {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem.shadow.Document == "" {
		return controlapi.PolicyVersion{}
	}
	return r.mem.shadow
}

// publishShadow is publish's part for the shadow sh (a snapshot's): the
// whole document for the netmap, nil when there is none, and the shadow
// compiled, reused while its version stays. pubMu is held.
func (c *Coordinator) publishShadow(sh controlapi.PolicyVersion) (*netmap.Policy, *policy.Policy) {
	if sh.Document == "" {
		return nil, nil
	}
	if c.current != nil && c.current.Shadow != nil && c.current.Shadow.Version == sh.Version {
		return c.current.Shadow, c.shadowPol
	}
	pol, err := policy.Compile([]byte(sh.Document), netmap.ShadowVersion(sh.Version))
	if err != nil {
		// Apply compiled it; gateways get an empty shadow, which the
		// status will show as differences on every allowed request.
		c.log.Error("coordinator: the stored shadow policy does not compile", "version", sh.Version, "err", err)
	}
	return &netmap.Policy{Version: sh.Version, Document: sh.Document}, pol
}

func (c *Coordinator) shadowRoutes(mux *http.ServeMux, body func(int64, handler) handler) {
	mux.HandleFunc("POST "+controlapi.PathShadow, c.admin(body(policy.MaxDocumentBytes+64<<10, c.handleShadowApply)))
	mux.HandleFunc("GET "+controlapi.PathShadow, c.admin(c.handleShadowGet))
	mux.HandleFunc("DELETE "+controlapi.PathShadow, c.admin(c.handleShadowClear))
	mux.HandleFunc("POST "+controlapi.PathShadowPromote, c.admin(body(controlapi.MaxBody, c.handleShadowPromote)))
	mux.HandleFunc("GET "+controlapi.PathShadowStatus, c.admin(c.handleShadowStatus))
}

func shadowAPI(p controlapi.PolicyVersion, withDoc bool) controlapi.ShadowPolicy {
	if p.Document == "" {
		return controlapi.ShadowPolicy{}
	}
	out := controlapi.ShadowPolicy{Version: p.Version, Name: netmap.ShadowVersion(p.Version), AppliedAt: p.AppliedAt, AppliedBy: p.AppliedBy}
	if withDoc {
		out.Document = p.Document
	}
	return out
}

func (c *Coordinator) handleShadowApply(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.PolicyApplyRequest
	if err := controlapi.Decode(r.Body, policy.MaxDocumentBytes+64<<10, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed policy request: "+err.Error())
		return
	}
	if _, err := policy.Compile([]byte(req.Document), "pending"); err != nil {
		ev := c.event(audit.KindAdmin, who.actor(), "coordinator")
		ev.Action, ev.Decision, ev.Reason, ev.Outcome, ev.Detail = "policy.shadow.apply", audit.Deny, reason.InvalidPolicy, audit.OutcomeRejected, err.Error()
		c.record(r.Context(), ev)
		writeError(w, http.StatusUnprocessableEntity, reason.InvalidPolicy, err.Error())
		return
	}
	active, err := c.reg.policy(r.Context(), 0)
	if err != nil {
		c.internalError(w, r, "policy: shadow apply", err)
		return
	}
	now := c.now()
	v, err := c.reg.addShadow(r.Context(), req.Document, who.actor(), "", now)
	if err != nil {
		c.internalError(w, r, "policy: shadow apply", err)
		return
	}
	// The detail is what the shadow changes against the active policy.
	c.adminEvent(r, who, "policy.shadow.apply", netmap.ShadowVersion(v), textdiff.Lines(active.Document, req.Document))
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "policy: publish", err)
		return
	}
	writeJSON(w, http.StatusOK, controlapi.ShadowPolicy{Version: v, Name: netmap.ShadowVersion(v), AppliedAt: now.UTC(), AppliedBy: who.actor()})
}

func (c *Coordinator) handleShadowGet(w http.ResponseWriter, r *http.Request, who caller) {
	writeJSON(w, http.StatusOK, shadowAPI(c.reg.currentShadow(), true))
}

func (c *Coordinator) handleShadowClear(w http.ResponseWriter, r *http.Request, who caller) {
	sh := c.reg.currentShadow()
	if sh.Version == 0 {
		writeError(w, http.StatusNotFound, reason.NotFound, "there is no shadow policy")
		return
	}
	if _, err := c.reg.addShadow(r.Context(), "", who.actor(), "cleared "+netmap.ShadowVersion(sh.Version), c.now()); err != nil {
		c.internalError(w, r, "policy: shadow clear", err)
		return
	}
	c.adminEvent(r, who, "policy.shadow.clear", netmap.ShadowVersion(sh.Version), "")
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "policy: publish", err)
		return
	}
	writeJSON(w, http.StatusOK, shadowAPI(sh, false))
}

func (c *Coordinator) handleShadowPromote(w http.ResponseWriter, r *http.Request, who caller) {
	prev, err := c.reg.policy(r.Context(), 0)
	if err != nil {
		c.internalError(w, r, "policy: shadow promote", err)
		return
	}
	now := c.now()
	v, sh, err := c.reg.promoteShadow(r.Context(), who.actor(), now)
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, "there is no shadow policy to promote")
		return
	} else if err != nil {
		c.internalError(w, r, "policy: shadow promote", err)
		return
	}
	// The audit of an apply of the shadow's document (handlePolicyApply).
	note := "promoted from " + netmap.ShadowVersion(sh.Version)
	c.adminEvent(r, who, "policy.apply", "v"+strconv.FormatInt(v, 10), note+"\n"+textdiff.Lines(prev.Document, sh.Document))
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "policy: publish", err)
		return
	}
	writeJSON(w, http.StatusOK, controlapi.PolicyVersion{Version: v, AppliedAt: now.UTC(), AppliedBy: who.actor(), Note: note})
}

func (c *Coordinator) handleShadowStatus(w http.ResponseWriter, r *http.Request, who caller) {
	sh := c.reg.currentShadow()
	st := controlapi.ShadowStatus{Shadow: shadowAPI(sh, false), Groups: []controlapi.ShadowGroup{}}
	active, err := c.reg.policy(r.Context(), 0)
	if err != nil {
		c.internalError(w, r, "policy: shadow status", err)
		return
	}
	st.ActiveVersion = active.Version
	if sh.Version == 0 {
		writeJSON(w, http.StatusOK, st)
		return
	}
	if err := c.summariseShadow(r.Context(), sh, &st); err != nil {
		c.internalError(w, r, "policy: shadow status", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// maxShadowExamples is how many event ids a status group lists.
const maxShadowExamples = 3

// shadowKey is what a status group is: one source, destination, target,
// active and shadow decision.
type shadowKey struct {
	src, dst, method, tool, resource, prompt, model string
	active, shadow                                  audit.Decision
}

// summariseShadow reads the request events recorded since the shadow sh
// was applied (less shadowSkew) and groups those that carry its decision
// into st. Memory is bounded by the groups kept: past MaxShadowGroups
// distinct groups, further new groups are only counted (Omitted).
func (c *Coordinator) summariseShadow(ctx context.Context, sh controlapi.PolicyVersion, st *controlapi.ShadowStatus) error {
	name := netmap.ShadowVersion(sh.Version)
	groups := map[shadowKey]*controlapi.ShadowGroup{}
	f := auditstore.Filter{Kind: audit.KindRequest, Since: sh.AppliedAt.Add(-shadowSkew), Ascending: true}
	err := c.audit.Query(ctx, f, func(e audit.Event) error {
		st.Requests++
		if e.Shadow == nil || e.Shadow.PolicyVersion != name {
			return nil
		}
		st.Differences++
		k := shadowKey{e.Src, e.Dst, e.Method, e.Tool, e.Resource, e.Prompt, e.Model, e.Decision, e.Shadow.Decision}
		g := groups[k]
		if g == nil {
			if len(groups) >= controlapi.MaxShadowGroups {
				st.Omitted++
				return nil
			}
			g = &controlapi.ShadowGroup{Src: e.Src, Dst: e.Dst, Method: e.Method, Tool: e.Tool, Resource: e.Resource,
				Prompt: e.Prompt, Model: e.Model, Active: string(e.Decision), Shadow: string(e.Shadow.Decision),
				First: e.Time, Examples: []string{}}
			groups[k] = g
		}
		g.Count++
		g.First = minTime(g.First, e.Time)
		g.Last = maxTime(g.Last, e.Time)
		if len(g.Examples) < maxShadowExamples {
			g.Examples = append(g.Examples, e.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("shadow status: %w", err)
	}
	for _, g := range groups {
		st.Groups = append(st.Groups, *g)
	}
	slices.SortFunc(st.Groups, func(a, b controlapi.ShadowGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Src, b.Src), cmp.Compare(a.Dst, b.Dst),
			cmp.Compare(a.Method, b.Method), cmp.Compare(a.Tool, b.Tool), cmp.Compare(a.Resource, b.Resource),
			cmp.Compare(a.Prompt, b.Prompt), cmp.Compare(a.Model, b.Model), cmp.Compare(a.Active, b.Active), cmp.Compare(a.Shadow, b.Shadow))
	})
	return nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
