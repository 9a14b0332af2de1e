package cli

import (
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

func TestAlertsCheckValidatesAndSendsASignedTestAlert(t *testing.T) {
	secret := "cli-test-secret-0123456789"
	got := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := alert.Verify([]byte(secret), r.Header.Get(alert.SignatureHeader), body, time.Now(), 0); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		got <- string(body)
	}))
	defer hook.Close()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "s")
	os.WriteFile(secretFile, []byte(secret), 0o600)
	file := filepath.Join(dir, "alerts.hujson")
	os.WriteFile(file, []byte(`{"receivers": [{"name": "hook", "url": "`+hook.URL+`/x?token=hidden", "secret_file": "`+secretFile+`", "kinds": ["denials"]}]}`), 0o600)

	code, out, errOut := run(t, nil, "alerts", "check", file, "--send-test")
	if code != 0 {
		t.Fatalf("status %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"valid, 1 receivers", "hook", "denials", "test alert: hook took it (HTTP 200)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") || strings.Contains(out, secret) {
		t.Errorf("output shows the URL's token or the secret:\n%s", out)
	}
	if body := <-got; !strings.Contains(body, `"kind":"test"`) {
		t.Errorf("the receiver got %s", body)
	}

	os.WriteFile(file, []byte("{\"receivers\": [],\n \"thresholds\": {\"denials\": 3}}"), 0o600)
	code, _, errOut = run(t, nil, "alerts", "check", file)
	if code != 2 || !strings.Contains(errOut, "alerts.hujson:2:17: thresholds.denials: unknown field") {
		t.Fatalf("an unknown field: status %d, %s", code, errOut)
	}
}
