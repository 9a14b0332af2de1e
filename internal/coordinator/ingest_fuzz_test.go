package coordinator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/store"
)

// FuzzAuditIngest feeds arbitrary bytes to the audit ingest handler as the
// body a tool node ships: the decoder and checks the coordinator runs on
// what a node sends, then the store. It must never fail with an internal
// error or panic, must refuse any batch with an event the node did not
// record, and whatever it accepts it must account for event by event, with
// a receipt that binds the batch.
func FuzzAuditIngest(f *testing.F) {
	const self = "spiffe://test.mesh/tool/ledger"
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ev := func(i int, edit func(*audit.Event)) audit.Event {
		e := audit.Event{V: audit.SchemaVersion, ID: fmt.Sprintf("%032x", i+1), Time: base.Add(time.Duration(i) * time.Second),
			Kind: audit.KindRequest, Src: "spiffe://test.mesh/agent/a", SrcAddr: "127.0.0.1:5", Dst: self,
			Method: "tools/call", Tool: "t", Decision: audit.Deny, Reason: "not_granted"}
		if edit != nil {
			edit(&e)
		}
		return e
	}
	seed := func(events ...audit.Event) {
		b, _ := json.Marshal(events)
		f.Add(b)
	}
	seed(ev(0, nil), ev(1, nil))
	seed(ev(0, nil), ev(0, func(e *audit.Event) { e.Reason = "other" }))
	seed(ev(2, func(e *audit.Event) { e.Dst = "spiffe://test.mesh/tool/files" }))
	seed(ev(3, func(e *audit.Event) { e.Src, e.Dst = self, "spiffe://test.mesh/tool/files" }))
	seed(ev(4, func(e *audit.Event) { e.Kind, e.Action = audit.KindAdmin, "policy.apply" }))
	seed(ev(5, func(e *audit.Event) { e.Kind, e.Reason = audit.KindIntegrity, reason.IDConflict }))
	seed(ev(6, func(e *audit.Event) { e.Kind, e.Count, e.First = audit.KindConnection, 7, e.Time.Add(-time.Minute) }))
	seed(ev(7, func(e *audit.Event) { e.Seq, e.Detail = 99, "<&>\u2028" }))
	seed(ev(8, func(e *audit.Event) { e.Usage = &audit.Usage{TotalTokens: 3} }))
	for _, s := range []string{`[]`, `null`, `{}`, `[{"v":1,"id":"x"}]`, `[{"v":1,"evil":true}]`, `[` + strings.Repeat(`{},`, 3) + `{}]`,
		`[{"v":1,"id":"00000000000000000000000000000001","time":"2026-03-01T12:00:00Z","kind":"session","dst":"` + self + `","detail":"\xff"}]`,
		`[{"v":1,"id":"00000000000000000000000000000001","time":"2026-03-01T12:00:00+05:00","kind":"session","dst":"` + self + `"}] trailing`} {
		f.Add([]byte(s))
	}

	db, err := store.OpenSQLite(filepath.Join(f.TempDir(), "mesh.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	as, err := auditstore.New(context.Background(), db, priv, auditstore.Options{CheckpointEvents: -1, Self: "spiffe://test.mesh/admin/coordinator"})
	if err != nil {
		f.Fatal(err)
	}
	c := &Coordinator{log: slog.New(slog.DiscardHandler), now: time.Now, td: "test.mesh", audit: as}
	c.refusals = audit.NewRefusals(audit.RefusalOptions{Record: c.appendEvent})
	id, _ := identity.New("test.mesh", identity.KindTool, "ledger")
	who := caller{id: id, addr: "127.0.0.1:9"}

	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, controlapi.PathAudit, bytes.NewReader(body))
		c.handleAuditIngest(w, r, who)
		switch w.Code {
		case http.StatusBadRequest, http.StatusForbidden:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var batch []audit.Event
		if err := controlapi.Decode(bytes.NewReader(body), controlapi.MaxAuditBody, &batch); err != nil {
			t.Fatalf("accepted a body that does not decode: %v", err)
		}
		for i, e := range batch {
			if e.Dst != self || (e.Kind != audit.KindRequest && e.Kind != audit.KindConnection && e.Kind != audit.KindSession) {
				t.Fatalf("accepted event %d the node did not record: %+v", i, e)
			}
		}
		var resp controlapi.AuditIngestResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Received != len(batch) || resp.Added+resp.Duplicates+len(resp.Conflicts) != len(batch) {
			t.Fatalf("answer does not account for the %d events: %+v", len(batch), resp)
		}
		if len(batch) > 0 {
			if err := resp.Receipt.CheckBatch(pub, batch); err != nil {
				t.Fatalf("receipt does not bind the batch: %v", err)
			}
		}
	})
}
