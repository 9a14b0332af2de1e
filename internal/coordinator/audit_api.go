package coordinator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"agentmesh/internal/audit"
	"agentmesh/internal/controlapi"
)

// maxIngestBatch bounds the events in one shipped batch.
const maxIngestBatch = 10_000

// handleAuditIngest stores a batch shipped by a node. Ingest is idempotent
// by event id, so a batch re-sent after a lost acknowledgement adds nothing.
// A node may only ship events it recorded itself: request and connection
// events must name it as the destination.
func (c *Coordinator) handleAuditIngest(w http.ResponseWriter, r *http.Request, who caller) {
	var batch []audit.Event
	if err := controlapi.Decode(r.Body, controlapi.MaxAuditBody, &batch); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "malformed audit batch: "+err.Error())
		return
	}
	if len(batch) > maxIngestBatch {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("batch of %d events is over the limit of %d", len(batch), maxIngestBatch))
		return
	}
	self := who.id.String()
	for i := range batch {
		if err := batch[i].Validate(); err != nil {
			writeError(w, http.StatusBadRequest, "bad_event", fmt.Sprintf("event %d: %v", i, err))
			return
		}
		if batch[i].Kind == audit.KindAdmin || batch[i].Dst != self && batch[i].Src != self {
			writeError(w, http.StatusForbidden, "foreign_event", fmt.Sprintf("event %d: a node may only ship events it recorded", i))
			return
		}
	}
	added, err := c.audit.Append(r.Context(), batch)
	if err != nil {
		c.internalError(w, r, "audit: ingest", err)
		return
	}
	resp := controlapi.AuditIngestResponse{Received: len(batch), Added: added}
	if resp.Receipt, err = c.audit.Receipt(r.Context()); err != nil {
		// The events are stored; the node just keeps its older receipt.
		c.log.Warn("coordinator: audit receipt", "err", err)
	}
	writeJSON(w, http.StatusOK, resp)
}

// handleAuditQuery streams matching events as JSON lines, so a large export
// never sits in memory on either side.
func (c *Coordinator) handleAuditQuery(w http.ResponseWriter, r *http.Request, who caller) {
	f, err := filterFromQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
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
			writeError(w, http.StatusBadRequest, "bad_request", "malformed verify request: "+err.Error())
			return
		}
	}
	rep, err := audit.Verify(r.Context(), c.db, c.auditPub, req.Receipts...)
	if err != nil {
		c.internalError(w, r, "audit: verify", err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// filterFromQuery reads an audit.Filter from URL parameters.
func filterFromQuery(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{
		Src:      q.Get("src"),
		Dst:      q.Get("dst"),
		Decision: q.Get("decision"),
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
