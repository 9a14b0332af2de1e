package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// TestIngestedToolChangedEventRaisesTheAlert: a gateway's tool_changed
// audit event raises tool_changed once per new definition.
func TestIngestedToolChangedEventRaisesTheAlert(t *testing.T) {
	rcv := newReceiver(t)
	co := startAlerting(t, Config{Alerts: rcv.config(alert.Thresholds{DenialsPerMinute: 1000, SpoolBacklog: time.Hour})})
	pinned, seen := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	detail, _ := json.Marshal(map[string]string{"tool": "read_file", "pinned": pinned, "seen": seen, "diff": "@@ description\n- a\n+ b\n"})
	ev := audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Time: time.Now(), Kind: audit.KindRequest,
		Dst: "spiffe://test.mesh/tool/files", Method: "tools/list", Tool: "read_file", Decision: audit.Deny,
		Reason: reason.ToolChanged, Detail: string(detail)}
	co.alerts.observe("spiffe://test.mesh/tool/files", []audit.Event{ev})
	a := rcv.next(alert.RefusedIdentity)
	if a.Kind != alert.ToolChanged || a.Subject != "files/read_file" || a.Details["pinned_sha256"] != pinned || a.Details["new_sha256"] != seen {
		t.Fatalf("alert %+v, want tool_changed for files/read_file", a)
	}
}

// TestToolReportsAreStoredPerServiceAndBounded: a report replaces the
// service's current definitions and keeps the old ones on record.
func TestToolReportsAreStoredPerServiceAndBounded(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testToolReports(t, startAlerting(t, Config{})) })
	t.Run("postgres", func(t *testing.T) {
		db := pgtest.Shared(t).NewDatabase(t)
		key, err := sealed.New([]byte(strings.Repeat("k", sealed.KeySize)))
		if err != nil {
			t.Fatal(err)
		}
		testToolReports(t, startAlerting(t, Config{Database: db, DatabaseKey: key}))
	})
}

func testToolReports(t *testing.T, co *Coordinator) {
	ctx := context.Background()
	def := func(desc string) controlapi.ReportedTool {
		d, err := toolpin.Parse([]byte(`{"name":"read","description":"` + desc + `"}`))
		if err != nil {
			t.Fatal(err)
		}
		return controlapi.ReportedTool{Name: d.Name, Hash: d.Hash, Definition: d.Canonical}
	}
	first, second := def("Reads."), def("Reads. And more.")
	if err := co.reg.reportTools(ctx, "files", []controlapi.ReportedTool{first}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := co.reg.reportTools(ctx, "files", []controlapi.ReportedTool{second}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := co.reg.reportTools(ctx, "db", []controlapi.ReportedTool{first}, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := co.reg.toolsSeen(ctx, "files")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("files: %+v", got)
	}
	for _, s := range got {
		if s.Service != "files" || s.Current != (s.Hash == second.Hash) {
			t.Errorf("row %+v", s)
		}
	}
	all, _ := co.reg.toolsSeen(ctx, "")
	if len(all) != 3 {
		t.Fatalf("all: %d rows", len(all))
	}
	// Over the bound, the oldest definitions no gateway reports now go.
	defer func(n int) { maxToolRows = n }(maxToolRows)
	maxToolRows = 4
	for i := range maxToolRows + 5 {
		if err := co.reg.reportTools(ctx, "churn", []controlapi.ReportedTool{def(fmt.Sprint("v", i))}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	churn, _ := co.reg.toolsSeen(ctx, "churn")
	if len(churn) != maxToolRows || !churn[0].Current {
		t.Fatalf("churn: %d rows, newest current %v", len(churn), len(churn) > 0 && churn[0].Current)
	}
}
