package alert

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

func testEnv(files map[string]string, vars map[string]string) Env {
	return Env{
		Getenv: func(k string) string { return vars[k] },
		ReadFile: func(p string) ([]byte, error) {
			if s, ok := files[p]; ok {
				return []byte(s), nil
			}
			return nil, fs.ErrNotExist
		},
	}
}

func TestParseReadsReceiversThresholdsAndSecrets(t *testing.T) {
	doc := `{
	// Where alerts go.
	"receivers": [
		{"name": "ops", "url": "https://hooks.example.com/x", "secret_file": "/s/ops", "kinds": ["denials", "audit_verify"]},
		{"name": "local", "url": "http://127.0.0.1:9000/hook", "secret_env": "LOCAL_SECRET"},
	],
	"thresholds": {"denials_per_minute": 5, "spool_backlog": "2m", "renewal_margin": "10m", "verify_every": "1h"},
	"delivery": {"max_attempts": 3, "timeout": "2s", "queue": 10},
}`
	cfg, err := Parse("a.hujson", []byte(doc), testEnv(map[string]string{"/s/ops": "ops-secret-0123456789\n"}, map[string]string{"LOCAL_SECRET": "local-secret-0123456789"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Receivers) != 2 || string(cfg.Receivers[0].Secret) != "ops-secret-0123456789" || string(cfg.Receivers[1].Secret) != "local-secret-0123456789" {
		t.Fatalf("receivers %+v", cfg.Receivers)
	}
	if !cfg.Receivers[0].Wants(AuditVerify) || cfg.Receivers[0].Wants(SpoolBacklog) || !cfg.Receivers[1].Wants(SpoolBacklog) {
		t.Fatalf("kinds %+v", cfg.Receivers)
	}
	want := Thresholds{DenialsPerMinute: 5, SpoolBacklog: 2 * time.Minute, RenewalMargin: 10 * time.Minute, VerifyEvery: time.Hour}
	if cfg.Thresholds != want || cfg.Delivery != (Delivery{MaxAttempts: 3, Timeout: 2 * time.Second, QueueSize: 10}) {
		t.Fatalf("thresholds %+v delivery %+v", cfg.Thresholds, cfg.Delivery)
	}
}

func TestParseNamesTheLineOfEachProblem(t *testing.T) {
	env := testEnv(map[string]string{"/s/short": "short", "/s/ok": "ok-secret-0123456789"}, nil)
	for _, tc := range []struct {
		name, doc string
		want      []string // each a substring of one error, with its line
	}{
		{"unknown field", "{\n\"receivers\": [],\n\"treshold\": {}\n}", []string{"a.hujson:3:1: treshold: unknown field"}},
		{"unknown receiver field", `{"receivers": [
  {"name": "a", "url": "https://x/", "secret_file": "/s/ok",
   "secret": "inline"}]}`, []string{"a.hujson:3:4: receivers[0].secret: unknown field"}},
		{"duplicate field", "{\"receivers\": [],\n \"receivers\": []}", []string{":2:2: receivers: duplicate field"}},
		{"bad kind", "{\"receivers\": [{\"name\": \"a\", \"url\": \"https://x/\", \"secret_file\": \"/s/ok\",\n\"kinds\": [\"denial\"]}]}", []string{":2:11: receivers[0].kinds[0]: unknown alert kind \"denial\""}},
		{"http off loopback", "{\"receivers\": [\n{\"name\": \"a\", \"url\": \"http://hooks.example.com/\", \"secret_file\": \"/s/ok\"}]}", []string{":2:22: receivers[0].url: http is allowed only to a loopback"}},
		{"short secret", "{\"receivers\": [\n{\"name\": \"a\", \"url\": \"https://x/\",\n \"secret_file\": \"/s/short\"}]}", []string{":3:17: receivers[0]: the secret is 5 bytes"}},
		{"missing env", "{\"receivers\": [{\"name\": \"a\", \"url\": \"https://x/\", \"secret_env\": \"NOPE\"}]}", []string{"environment variable NOPE is not set"}},
		{"empty kinds", "{\"receivers\": [{\"name\": \"a\", \"url\": \"https://x/\", \"secret_file\": \"/s/ok\", \"kinds\": []}]}", []string{"an empty list would send nothing"}},
		{"no secret", "{\"receivers\": [{\"name\": \"a\", \"url\": \"https://x/\"}]}", []string{"a receiver needs a secret"}},
		{"credentials in url", "{\"receivers\": [{\"name\": \"a\", \"url\": \"https://u:p@x/\", \"secret_file\": \"/s/ok\"}]}", []string{"credentials in the URL"}},
		{"bad threshold", "{\"receivers\": [],\n\"thresholds\": {\"denials_per_minute\": 0,\n \"spool_backlog\": \"soon\"}}",
			[]string{":2:38: thresholds.denials_per_minute: want a whole number", ":3:19: thresholds.spool_backlog: want a duration"}},
		{"syntax", "{\n\"receivers\": [,]}", []string{"a.hujson:2:"}},
		{"no receivers", `{"receivers": []}`, []string{"no receivers"}},
		{"same name twice", `{"receivers": [{"name": "a", "url": "https://x/", "secret_file": "/s/ok"}, {"name": "a", "url": "https://y/", "secret_file": "/s/ok"}]}`, []string{"a second receiver named \"a\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("a.hujson", []byte(tc.doc), env)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *ConfigError", err)
			}
			if strings.Contains(err.Error(), "ok-secret") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

func TestLoadRefusesASecretFileOthersCanRead(t *testing.T) {
	dir := t.TempDir()
	secret := dir + "/s"
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := dir + "/alerts.hujson"
	os.WriteFile(conf, []byte(`{"receivers": [{"name": "a", "url": "https://x/", "secret_file": "`+secret+`"}]}`), 0o600)
	if _, err := Load(conf); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Load = %v, want a refusal of the readable secret", err)
	}
	os.Chmod(secret, 0o600)
	if _, err := Load(conf); err != nil {
		t.Fatal(err)
	}
}

func TestExampleAlertsFileParses(t *testing.T) {
	doc, err := os.ReadFile("../../examples/alerts.hujson")
	if err != nil {
		t.Fatal(err)
	}
	env := testEnv(map[string]string{"/etc/agentmesh/oncall-webhook.secret": "oncall-secret-0123456789"},
		map[string]string{"AGENTMESH_COLLECTOR_SECRET": "collector-secret-0123456789"})
	cfg, err := Parse("examples/alerts.hujson", doc, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Receivers) != 2 || cfg.Thresholds.VerifyEvery != time.Hour || cfg.Delivery.MaxAttempts != 6 {
		t.Fatalf("parsed %+v", cfg)
	}
}
