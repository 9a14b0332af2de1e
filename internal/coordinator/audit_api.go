package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// handleAuditIngest stores a batch shipped by a node. Only the node that
// made a decision may record it: the caller must be a node that decides
// (kind tool or model), and every event must be one it recorded
// (auditstore.Store.Ingest checks kinds and destinations). A batch that breaks
// the rule is refused whole (403 foreign_event) and the refusal is
// audited. Ingest is idempotent by (dst, id), so a batch re-sent after a
// lost answer adds nothing; the answer accounts for every event.
func (c *Coordinator) handleAuditIngest(w http.ResponseWriter, r *http.Request, who caller) {
	self := who.actor()
	if !who.id.Kind.Serves() {
		why := fmt.Sprintf("a node of kind %s records no decisions", who.id.Kind)
		c.refuseForeign(r, who, why)
		writeError(w, http.StatusForbidden, reason.ForeignEvent, why)
		return
	}
	var batch []audit.Event
	if err := controlapi.Decode(r.Body, controlapi.MaxAuditBody, &batch); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed audit batch: "+err.Error())
		return
	}
	if len(batch) > audit.MaxBatch {
		writeError(w, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("batch of %d events is over the limit of %d", len(batch), audit.MaxBatch))
		return
	}
	for i := range batch {
		if err := batch[i].Validate(); err != nil {
			writeError(w, http.StatusBadRequest, reason.BadEvent, fmt.Sprintf("event %d: %v", i, err))
			return
		}
	}
	res, err := c.audit.Ingest(r.Context(), self, batch)
	var fe *auditstore.ForeignEventError
	if errors.As(err, &fe) {
		c.refuseForeign(r, who, fe.Error())
		writeError(w, http.StatusForbidden, reason.ForeignEvent, fe.Error())
		return
	}
	if err != nil {
		c.internalError(w, r, "audit: ingest", err)
		return
	}
	c.alerts.observe(self, batch)
	c.cfg.Metrics.Ingested(res.Added, res.Duplicates, len(res.Conflicts), res.Receipt.Seq)
	for _, cf := range res.Conflicts {
		c.log.Error("coordinator: AUDIT ID CONFLICT: a node shipped other content under an event id it used before; both are kept",
			"node", self, "event_id", cf.ID, "stored_seq", cf.StoredSeq, "integrity_seq", cf.Seq)
	}
	writeJSON(w, http.StatusOK, controlapi.AuditIngestResponse{
		Received: len(batch), Added: res.Added, Duplicates: res.Duplicates, Conflicts: res.Conflicts, Receipt: res.Receipt,
	})
}

// refuseForeign audits a refused audit batch, aggregated per node.
func (c *Coordinator) refuseForeign(r *http.Request, who caller, why string) {
	ev := c.event(audit.KindIntegrity, who.actor(), "coordinator")
	ev.SrcAddr, ev.Action = r.RemoteAddr, "audit.ingest"
	ev.Decision, ev.Reason, ev.Detail = audit.Deny, reason.ForeignEvent, why
	c.refuse(r.Context(), ev)
}

// handleAuditQuery streams matching events as JSON lines, so a large export
// never sits in memory on either side.
func (c *Coordinator) handleAuditQuery(w http.ResponseWriter, r *http.Request, who caller) {
	f, err := filterFromQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	n := 0
	err = c.audit.Query(r.Context(), f, func(e audit.Event) error {
		n++
		if err := enc.Encode(e); err != nil {
			return err
		}
		if flusher != nil && n%256 == 0 {
			flusher.Flush()
		}
		return nil
	})
	if err != nil {
		c.log.Warn("coordinator: audit query", "err", err)
	}
}

// handleAuditVerify checks the receipts posted with it (nodes keep them,
// see controlapi.VerifyRequest) along with the stored checkpoints. It first
// signs the head the store holds in memory, so the
// whole trail up to now is covered by a signature, then recomputes the
// chain from the database. Signing cannot launder tampering: the signed
// head is the one the store computed as events arrived, not one read back
// from the (possibly edited) rows.
func (c *Coordinator) handleAuditVerify(w http.ResponseWriter, r *http.Request, who caller) {
	if err := c.audit.Checkpoint(r.Context()); err != nil {
		c.log.Warn("coordinator: checkpoint before verify", "err", err)
	}
	var req controlapi.VerifyRequest
	if r.Method == http.MethodPost {
		if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
			writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed verify request: "+err.Error())
			return
		}
	}
	rep, err := auditstore.Verify(r.Context(), c.db, c.auditPub, req.Receipts...)
	if err != nil {
		c.internalError(w, r, "audit: verify", err)
		return
	}
	c.alerts.verified(rep, "asked by "+who.actor())
	writeJSON(w, http.StatusOK, rep)
}

// filterFromQuery reads an auditstore.Filter from URL parameters.
func filterFromQuery(r *http.Request) (auditstore.Filter, error) {
	q := r.URL.Query()
	f := auditstore.Filter{
		Src:      q.Get("src"),
		Dst:      q.Get("dst"),
		Decision: audit.Decision(q.Get("decision")),
		Kind:     audit.Kind(q.Get("kind")),
		Method:   q.Get("method"),
		Tool:     q.Get("tool"),
	}
	if f.Decision != "" && f.Decision != audit.Allow && f.Decision != audit.Deny {
		return f, fmt.Errorf("decision must be allow or deny")
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if s := q.Get(p.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return f, fmt.Errorf("%s: %w", p.name, err)
			}
			*p.dst = t
		}
	}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"limit", nil}, {"after", &f.AfterSeq}} {
		if s := q.Get(p.name); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				return f, fmt.Errorf("%s must be a non-negative number", p.name)
			}
			if p.dst != nil {
				*p.dst = v
			} else {
				f.Limit = int(v)
			}
		}
	}
	f.Ascending = q.Get("order") == "asc"
	return f, nil
}
