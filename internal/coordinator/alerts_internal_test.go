package coordinator

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sealed"
	"github.com/agentmesh/agentmesh/internal/store/pgtest"
)

const testAlertSecret = "alert-test-secret-0123456789"

// receiver is a loopback webhook that checks every delivery's signature
// and passes the alerts on.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	alerts chan alert.Alert
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, alerts: make(chan alert.Alert, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := alert.Verify([]byte(testAlertSecret), req.Header.Get(alert.SignatureHeader), body, time.Now(), 0); err != nil {
			t.Errorf("delivery refused: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var a alert.Alert
		if err := json.Unmarshal(body, &a); err != nil {
			t.Errorf("delivery body: %v", err)
		}
		r.alerts <- a
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) config(th alert.Thresholds) *alert.Config {
	return &alert.Config{Receivers: []alert.Receiver{{Name: "test-hook", URL: r.srv.URL + "/hook", Secret: []byte(testAlertSecret)}}, Thresholds: th}
}

// next returns the next alert delivered that is not of a kind in skip.
func (r *receiver) next(skip ...alert.Kind) alert.Alert {
	r.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case a := <-r.alerts:
			if !contains(skip, a.Kind) {
				return a
			}
		case <-timeout:
			r.t.Fatal("no alert delivered")
		}
	}
}

func contains(ks []alert.Kind, k alert.Kind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func startAlerting(t *testing.T, cfg Config) *Coordinator {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
	}
	cfg.Listen, cfg.TrustDomain = "127.0.0.1:0", "test.mesh"
	co, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { co.Close() })
	return co
}

func denial(src string, at time.Time) audit.Event {
	ev := audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Kind: audit.KindRequest, Src: src,
		Dst: "spiffe://test.mesh/tool/gw", Method: "tools/call", Tool: "delete", Decision: audit.Deny, Reason: reason.NoGrant, Outcome: audit.OutcomeDenied}
	ev.Time = at
	return ev
}

// waitAudit waits for an event of the coordinator's trail that match
// accepts.
func waitAudit(t *testing.T, co *Coordinator, match func(audit.Event) bool) audit.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		appended := co.AuditAppended()
		var found *audit.Event
		err := co.audit.Query(context.Background(), auditstore.Filter{Kind: audit.KindAdmin}, func(e audit.Event) error {
			if found == nil && match(e) {
				found = &e
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if found != nil {
			return *found
		}
		select {
		case <-appended:
		case <-deadline:
			t.Fatal("the event never reached the audit trail")
		}
	}
}

func TestDenialBurstSendsOneSignedAlertPerWindowAndAuditsIt(t *testing.T) {
	rcv := newReceiver(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	co := startAlerting(t, Config{Now: clock, Alerts: rcv.config(alert.Thresholds{DenialsPerMinute: 5, SpoolBacklog: time.Hour})})
	src := "spiffe://test.mesh/agent/noisy"
	var burst []audit.Event
	for range 12 {
		burst = append(burst, denial(src, now))
	}
	co.alerts.observe("spiffe://test.mesh/tool/gw", burst)

	first := rcv.next()
	if first.Kind != alert.RefusedIdentity || first.Subject != src {
		t.Fatalf("first alert %+v, want refused_identity for %s", first, src)
	}
	a := rcv.next()
	if a.Kind != alert.Denials || a.Subject != src || a.Coordinator != co.URL() {
		t.Fatalf("alert %+v, want denials for %s from %s", a, src, co.URL())
	}
	if n, _ := a.Details["denials"].(float64); n < 5 {
		t.Fatalf("details %v", a.Details)
	}
	ev := waitAudit(t, co, func(e audit.Event) bool {
		return e.Action == "alert.delivered" && strings.Contains(e.Detail, a.ID)
	})
	if ev.Target != "test-hook" || !strings.Contains(ev.Detail, "HTTP 200") {
		t.Fatalf("audit event %+v", ev)
	}

	// More denials in the same window: no second alert. Then the next
	// window's burst alerts again; it arriving first shows none came
	// between.
	co.alerts.observe("spiffe://test.mesh/tool/gw", burst[:6])
	mu.Lock()
	now = now.Add(2 * denialWindow)
	mu.Unlock()
	var later []audit.Event
	for range 6 {
		later = append(later, denial(src, clock()))
	}
	co.alerts.observe("spiffe://test.mesh/tool/gw", later)
	b := rcv.next()
	if b.Kind != alert.Denials || b.ID == a.ID || !b.Time.After(a.Time) {
		t.Fatalf("after the window: %+v, want a new denials alert", b)
	}
}

func TestSpoolBacklogAndRenewalFailingAlerts(t *testing.T) {
	rcv := newReceiver(t)
	co := startAlerting(t, Config{CertTTL: 10 * time.Minute, Alerts: rcv.config(alert.Thresholds{DenialsPerMinute: 5, SpoolBacklog: time.Minute, RenewalMargin: 5 * time.Minute})})
	old := audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Kind: audit.KindRequest, Src: "spiffe://test.mesh/agent/a", Decision: audit.Allow}
	old.Time = time.Now().Add(-time.Hour)
	co.alerts.observe("spiffe://test.mesh/tool/late", []audit.Event{old})
	a := rcv.next()
	if a.Kind != alert.SpoolBacklog || a.Subject != "spiffe://test.mesh/tool/late" {
		t.Fatalf("alert %+v, want spool_backlog", a)
	}

	// A node whose certificate expires within the margin.
	n, err := co.reg.ensureNode(context.Background(), netmap.Node{Name: "stale", Kind: identity.KindTool, Tags: []identity.Tag{}, Incarnation: newIncarnation()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := co.reg.setCertExpiry(context.Background(), n.Incarnation, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	co.alerts.checkRenewals(context.Background())
	r := rcv.next()
	if r.Kind != alert.RenewalFailing || r.Subject != "stale" || r.Details["expired"] != false {
		t.Fatalf("alert %+v, want renewal_failing for stale", r)
	}

	// tool_changed, which tool pinning will raise.
	co.AlertToolChanged("files", "read_file", "aaaa", "bbbb")
	tc := rcv.next(alert.RenewalFailing)
	if tc.Kind != alert.ToolChanged || tc.Subject != "files/read_file" || tc.Details["new_sha256"] != "bbbb" {
		t.Fatalf("alert %+v, want tool_changed for files/read_file", tc)
	}
}

func TestAuditVerifyProblemRaisesAnAlert(t *testing.T) {
	rcv := newReceiver(t)
	co := startAlerting(t, Config{Alerts: rcv.config(alert.Thresholds{})})
	co.alerts.verified(audit.Report{OK: true, Events: 3}, "test")
	co.alerts.verified(audit.Report{OK: false, Events: 3, BrokenSeq: 2, Problem: "event 2 does not hash to the chain"}, "test")
	a := rcv.next()
	if a.Kind != alert.AuditVerify || a.Details["broken_seq"] != float64(2) || !strings.Contains(a.Summary, "does not hash") {
		t.Fatalf("alert %+v, want audit_verify for the broken chain (and none for the intact one)", a)
	}
}

// TestAlertIsClaimedOnce: the claim key (kind, subject, window) admits
// one alert, whichever coordinator raises it, and survives a restart.
func TestAlertIsClaimedOnce(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		rcv := newReceiver(t)
		dir := filepath.Join(t.TempDir(), "data")
		co := startAlerting(t, Config{DataDir: dir, Alerts: rcv.config(alert.Thresholds{})})
		a := alert.New(alert.RefusedIdentity, "addr:192.0.2.1", "x", time.Now())
		if !co.alerts.claim(context.Background(), a) {
			t.Fatal("first claim refused")
		}
		co.Close()
		co = startAlerting(t, Config{DataDir: dir, Alerts: rcv.config(alert.Thresholds{})})
		b := alert.New(alert.RefusedIdentity, "addr:192.0.2.1", "x", time.Now())
		if co.alerts.claim(context.Background(), b) {
			t.Fatal("the same key claimed again after a restart")
		}
		b.Window = "another"
		if !co.alerts.claim(context.Background(), b) {
			t.Fatal("another window refused")
		}
	})
	t.Run("postgres", func(t *testing.T) {
		srv := pgtest.Shared(t)
		db := srv.NewDatabase(t)
		key, err := sealed.New([]byte(strings.Repeat("k", sealed.KeySize)))
		if err != nil {
			t.Fatal(err)
		}
		rcv := newReceiver(t)
		dir := t.TempDir()
		var cos []*Coordinator
		for _, name := range []string{"a", "b"} {
			cos = append(cos, startAlerting(t, Config{DataDir: filepath.Join(dir, name), Database: db, DatabaseKey: key, Alerts: rcv.config(alert.Thresholds{})}))
		}
		// Both raise the same alert (their own ids); one delivers it.
		for _, co := range cos {
			co.alerts.raise(alert.New(alert.RefusedIdentity, "addr:192.0.2.7", "twice", time.Now()))
		}
		// A sentinel from each, raised after: each coordinator claims
		// and sends in order, so once both sentinels arrived, both
		// coordinators have handled the duplicate.
		for i, co := range cos {
			s := alert.New(alert.AuditVerify, "sentinel", "", time.Now())
			s.Window = string(rune('a' + i))
			co.alerts.raise(s)
		}
		dup, sentinels := 0, 0
		for sentinels < 2 {
			switch a := rcv.next(); a.Subject {
			case "sentinel":
				sentinels++
			case "addr:192.0.2.7":
				dup++
			}
		}
		if dup != 1 {
			t.Fatalf("the alert raised by both coordinators was delivered %d times, want once", dup)
		}
	})
}
