package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/store"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// The review workflow of tool pinning: each tool node's gateway reports
// the tool definitions it sees (POST /v1/tools, for its own service only:
// the service is the caller's name, never a field of the report), and
// admins read them (GET /v1/tools) to see drift, diff and pin. A report
// is bounded (controlapi.MaxReportTools, MaxReportBytes), every definition
// is hashed again here and must match the hash reported, and a service
// keeps at most maxToolRows definitions on record, the oldest non-current
// ones going first. The table is a view of what gateways see, not policy:
// it is not in backups (gateways report again when they next list).

// toolsTable is registry step 5.
const toolsTable = `
CREATE TABLE tool_definitions (
	service    TEXT NOT NULL,
	tool       TEXT NOT NULL,
	hash       TEXT NOT NULL,
	definition TEXT NOT NULL,
	current    INTEGER NOT NULL,
	first_seen BIGINT NOT NULL,
	last_seen  BIGINT NOT NULL,
	PRIMARY KEY (service, tool, hash)
);
`

// maxToolRows bounds the definitions kept per service (a variable for
// tests).
var maxToolRows = 4 * controlapi.MaxReportTools

func (c *Coordinator) handleToolReport(w http.ResponseWriter, r *http.Request, who caller) {
	if who.id.Kind != identity.KindTool {
		writeError(w, http.StatusForbidden, reason.NotServingKind, "only tool nodes report tool definitions")
		return
	}
	var rep controlapi.ToolReport
	if err := controlapi.Decode(r.Body, controlapi.MaxReportBytes+64<<10, &rep); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed tool report: "+err.Error())
		return
	}
	if len(rep.Tools) > controlapi.MaxReportTools {
		writeError(w, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("more than %d tools", controlapi.MaxReportTools))
		return
	}
	total, seen := 0, map[string]bool{}
	for _, t := range rep.Tools {
		total += len(t.Definition)
		d, err := toolpin.Parse(t.Definition)
		if err != nil || d.Name != t.Name || d.Hash != t.Hash || seen[t.Name] {
			writeError(w, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("tool %q: its definition does not hash to %q, or is repeated", t.Name, t.Hash))
			return
		}
		seen[t.Name] = true
	}
	if total > controlapi.MaxReportBytes {
		writeError(w, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("definitions larger than %d bytes in all", controlapi.MaxReportBytes))
		return
	}
	if err := c.reg.reportTools(r.Context(), string(who.id.Name), rep.Tools, c.now()); err != nil {
		c.internalError(w, r, "tools: report", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handleToolList(w http.ResponseWriter, r *http.Request, who caller) {
	out, err := c.reg.toolsSeen(r.Context(), r.URL.Query().Get("service"))
	if err != nil {
		c.internalError(w, r, "tools: list", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// reportTools replaces service's current definitions with tools.
func (r *registry) reportTools(ctx context.Context, service string, tools []controlapi.ReportedTool, now time.Time) error {
	tx, err := r.db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE tool_definitions SET current = 0 WHERE service = $1`, service); err != nil {
		return err
	}
	for _, t := range tools {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tool_definitions(service, tool, hash, definition, current, first_seen, last_seen)
			VALUES($1, $2, $3, $4, 1, $5, $5)
			ON CONFLICT (service, tool, hash) DO UPDATE SET current = 1, last_seen = $5`,
			service, t.Name, t.Hash, string(t.Definition), now.UnixNano()); err != nil {
			return err
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tool_definitions WHERE service = $1`, service).Scan(&n); err != nil {
		return err
	}
	if n > maxToolRows {
		if _, err := tx.ExecContext(ctx, `DELETE FROM tool_definitions WHERE service = $1 AND current = 0 AND (tool, hash) IN (
			SELECT tool, hash FROM tool_definitions WHERE service = $1 AND current = 0 ORDER BY last_seen LIMIT $2)`, service, n-maxToolRows); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// toolsSeen lists the definitions on record, of one service or ("") all.
func (r *registry) toolsSeen(ctx context.Context, service string) ([]controlapi.ToolSeen, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT service, tool, hash, definition, current, first_seen, last_seen FROM tool_definitions
		WHERE $1 = '' OR service = $1 ORDER BY service, tool, last_seen DESC`, service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []controlapi.ToolSeen{}
	for rows.Next() {
		var t controlapi.ToolSeen
		var def string
		var cur int
		var first, last int64
		if err := rows.Scan(&t.Service, &t.Name, &t.Hash, &def, &cur, &first, &last); err != nil {
			return nil, err
		}
		t.Definition, t.Current = json.RawMessage(def), cur != 0
		t.FirstSeen, t.LastSeen = time.Unix(0, first).UTC(), time.Unix(0, last).UTC()
		out = append(out, t)
	}
	return out, rows.Err()
}

// toolDrift reads the Detail of a gateway's tool_changed event.
type toolDrift struct {
	Tool   string `json:"tool"`
	Pinned string `json:"pinned"`
	Seen   string `json:"seen"`
}

// toolChangedAlert is the tool_changed alert an ingested event raises:
// a gateway's audit of a tool whose definition does not match its pin.
func toolChangedAlert(from string, ev *audit.Event) (toolDrift, bool) {
	if from == "" || ev.Reason != reason.ToolChanged || ev.Method != "tools/list" || ev.Kind != audit.KindRequest {
		return toolDrift{}, false
	}
	var d toolDrift
	if json.Unmarshal([]byte(ev.Detail), &d) != nil || d.Tool == "" || !toolpin.ValidHash(d.Seen) {
		return toolDrift{}, false
	}
	return d, true
}
