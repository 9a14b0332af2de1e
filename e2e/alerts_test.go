//go:build unix

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
)

// TestDenialBurstReachesAWebhookSignedAndAudited: an agent makes a burst
// of denied tool calls; the coordinator (the real binary, --alerts)
// sends one denials alert to a webhook, signed with the receiver's
// secret, and the delivery is in the audit trail.
func TestDenialBurstReachesAWebhookSignedAndAudited(t *testing.T) {
	requireE2E(t)
	secret := "e2e-webhook-secret-" + strings.Repeat("s", 16)
	alerts := make(chan alert.Alert, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := alert.Verify([]byte(secret), r.Header.Get(alert.SignatureHeader), body, time.Now(), 0); err != nil {
			t.Errorf("webhook: a delivery that does not verify: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var a alert.Alert
		if err := json.Unmarshal(body, &a); err != nil {
			t.Errorf("webhook: body %q: %v", body, err)
		}
		select {
		case alerts <- a:
		default:
		}
	}))
	defer hook.Close()

	m := newMeshArgs(t, func(dir string) []string {
		secretFile := filepath.Join(dir, "webhook.secret")
		conf := filepath.Join(dir, "alerts.hujson")
		if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		doc := `{
  // The test's webhook gets the denial bursts only.
  "receivers": [{"name": "e2e-hook", "url": "` + hook.URL + `/alerts", "secret_file": "` + secretFile + `", "kinds": ["denials"]}],
  "thresholds": {"denials_per_minute": 5},
}`
		if err := os.WriteFile(conf, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"--alerts", conf}
	})
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(everythingPolicy)
	m.serve("everything", tool, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")

	const burst = 8
	var steps []step
	for range burst {
		steps = append(steps, step{Op: "callTool", Name: "get-env"})
	}
	out := runClient(t, stdioClient("everything", agent, steps...))
	for _, r := range out.Results {
		policyDenial(t, r, "not_granted")
	}

	var a alert.Alert
	select {
	case a = <-alerts:
	case <-time.After(auditTimeout):
		t.Fatal("no alert reached the webhook")
	}
	const src = "spiffe://agentmesh.local/agent/assistant"
	if a.Kind != alert.Denials || a.Subject != src || !strings.HasPrefix(a.Coordinator, "https://127.0.0.1:") {
		t.Fatalf("alert %+v, want denials for %s", a, src)
	}
	if n, _ := a.Details["denials"].(float64); n < 5 {
		t.Fatalf("alert details %v, want at least 5 denials", a.Details)
	}
	if strings.Contains(a.Summary+string(mustJSON(t, a.Details)), "PATH") {
		t.Fatalf("alert carries more than counts and names: %+v", a)
	}

	// The delivery is in the audit trail, as the coordinator's own event.
	f := startProc(t, "audit --follow", []string{agentmeshBin, "audit", "--follow", "--limit", "0", "--json", "--kind", "admin", "--state", m.admin}, m.env())
	line, err := f.waitLine(f.stdout, auditTimeout, func(l string) bool {
		var e struct{ Action, Target, Detail string }
		return json.Unmarshal([]byte(l), &e) == nil && e.Action == "alert.delivered" && e.Target == "e2e-hook" && strings.Contains(e.Detail, a.ID)
	})
	f.stop(t)
	if err != nil {
		t.Fatalf("the delivery of alert %s never reached the audit trail: %v", a.ID, err)
	}
	if !strings.Contains(line, `"src":"spiffe://agentmesh.local/admin/coordinator"`) {
		t.Fatalf("delivery event %s is not the coordinator's", line)
	}
	m.verifyAudit()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
