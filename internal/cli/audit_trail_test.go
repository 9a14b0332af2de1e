package cli

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/spool"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/engine"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayListenerAggregatesRefusedHandshakes: a client that keeps
// handshaking without a certificate with a gateway's listener is audited
// as one event at once and one counted aggregate, which the node writes
// into its spool when it stops; together they account for every attempt.
func TestGatewayListenerAggregatesRefusedHandshakes(t *testing.T) {
	d, ctx := startTestMesh(t)
	var key controlapi.KeyCreateResponse
	if err := d.Admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "tool"}, &key); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(d.Dir, "files")
	id, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key.Key, Name: "files", State: state})
	if err != nil {
		t.Fatal(err)
	}
	up, err := d.StartLedger()
	if err != nil {
		t.Fatal(err)
	}
	gctx, stop := context.WithCancel(ctx)
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- engine.ServeGateway(gctx, engine.GatewayConfig{State: state, Listen: "127.0.0.1:0", UpstreamURL: up,
			Logger: testLogger(t), Ready: func(s engine.Serving) { ready <- s.Addr }})
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	const attempts = 15
	for range attempts {
		// The client's handshake fails once the server has refused (and
		// audited) it: TLS 1.3 client certificates are checked before the
		// server's first application data, which the client reads.
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err == nil {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// What was shipped is at the coordinator; the rest is in the spool.
	var events []audit.Event
	body, err := d.Admin.Stream(ctx, controlapi.PathAudit+"?kind=connection&decision=deny&dst=tool:files")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(body)
	for dec.More() {
		var e audit.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	body.Close()
	sp, err := spool.Open(filepath.Join(state, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if sp.Pending() > 0 {
		b, err := sp.Next(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, b.Events...)
	}
	var sum int64
	for _, e := range events {
		if e.Reason != reason.NoCertificate || e.Dst != id.String() {
			t.Fatalf("event %+v", e)
		}
		sum += e.Attempts()
	}
	if len(events) != 2 || sum != attempts {
		t.Fatalf("%d events for %d attempts, want 2 for %d", len(events), sum, attempts)
	}
}

// TestAuditVerifyFlagsIDConflictsAndChecksReceiptBatches: an id that a
// gateway shipped twice with different content makes verify exit non-zero
// although the chain is intact, and names it; the gateway's receipt file
// is read and its batch checked.
func TestAuditVerifyFlagsIDConflictsAndChecksReceiptBatches(t *testing.T) {
	d, ctx := startTestMesh(t)
	state := filepath.Join(d.Dir, "ledger")
	ledger, err := d.Client(state)
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	ev := audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Time: time.Now().UTC(), Kind: audit.KindRequest,
		Src: "spiffe://agentmesh.local/agent/teller", Dst: ledger.ID().String(), Method: "tools/call", Tool: "balance",
		Decision: audit.Allow, Reason: "allowed"}
	if err := ledger.Send(ctx, []audit.Event{ev}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AGENTMESH_STATE": d.Coordinator.AdminDir()}
	receipt := filepath.Join(t.TempDir(), "receipt.json")
	b, err := os.ReadFile(filepath.Join(state, "audit-receipt.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(receipt, b, 0o600)
	code, out, _ := run(t, env, "audit", "verify", "--receipt", receipt, "--json")
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.OK || rep.Receipts != 1 || rep.ReceiptEvents != 1 {
		t.Fatalf("verify with the receipt: exit %d, %q", code, out)
	}
	ev.Tool = "transfer"
	if err := ledger.Send(ctx, []audit.Event{ev}); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, env, "audit", "verify")
	if code == 0 || !strings.Contains(out, "intact") || !strings.Contains(out, ev.ID) {
		t.Fatalf("verify with an id conflict: exit %d, %q", code, out)
	}
	// The report is several lines for people: each line is escaped, the
	// line breaks between them are not.
	if strings.Count(out, "\n") < 2 || strings.Contains(out, `\x0a`) {
		t.Fatalf("verify printed its report as %q, want one escaped line per line", out)
	}
	if code, out, _ := run(t, env, "audit", "--kind", "integrity", "--json"); code != 0 || !strings.Contains(out, `"reason":"id_conflict"`) {
		t.Fatalf("audit --kind integrity: exit %d, %q", code, out)
	}
	// A receipt file that is not one is refused with a clear message.
	os.WriteFile(receipt, []byte(`{"seq":1,"head":"00","sig":"x","extra":1}`), 0o600)
	if code, _, errOut := run(t, env, "audit", "verify", "--receipt", receipt); code == 0 || !strings.Contains(errOut, "not a receipt") {
		t.Fatalf("verify with a malformed receipt: exit %d, %q", code, errOut)
	}
}
