package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestConsoleCommandPrintsALoginURLThatWorksOnce(t *testing.T) {
	d, _ := startTestMesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := chunkWriter{chunks: make(chan string, 16)}
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"console", "--listen", "127.0.0.1:0", "--state", d.Coordinator.AdminDir()},
			Env{Stdout: w, Stderr: w, Getenv: func(string) string { return "" }})
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("console exited %d after it was stopped, want 0", code)
		}
	}()
	login := regexp.MustCompile(`http://127\.0\.0\.1:\d+/login\?token=[A-Za-z0-9_-]+`)
	var out, url string
	deadline := time.After(30 * time.Second)
	for url == "" {
		select {
		case c := <-w.chunks:
			out += c
			url = login.FindString(out)
		case code := <-done:
			done <- code // for the deferred wait
			t.Fatalf("console exited %d:\n%s", code, out)
		case <-deadline:
			t.Fatalf("console printed no login URL:\n%s", out)
		}
	}

	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	browser := &http.Client{Jar: jar, Transport: tr}
	resp, err := browser.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<h1>Overview</h1>") || !strings.Contains(string(body), "tool:ledger") {
		t.Fatalf("login URL: %d, want the overview with the ledger:\n%s", resp.StatusCode, body)
	}

	// The URL is spent: another browser cannot use it.
	other := &http.Client{Transport: tr}
	resp, err = other.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the login URL a second time: %d, want 401", resp.StatusCode)
	}
}

func TestConsoleCommandRefusesANonLoopbackAddress(t *testing.T) {
	d, _ := startTestMesh(t)
	code, _, errOut := run(t, nil, "console", "--listen", "0.0.0.0:0", "--state", d.Coordinator.AdminDir())
	if code == 0 || !strings.Contains(errOut, "not loopback") {
		t.Errorf("console --listen 0.0.0.0:0: exit %d, stderr %q; want a refusal naming loopback", code, errOut)
	}
}
