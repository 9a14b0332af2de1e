package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deadURL is the URL of a loopback port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "http://" + ln.Addr().String() + "/mcp"
}

// TestServeGatewayWithRequireUpstreamRefusesAnUpstreamItCannotUse: a
// stdio command that is not found, or an HTTP upstream that does not
// answer, stops the start with ErrUpstream before the node is opened.
func TestServeGatewayWithRequireUpstreamRefusesAnUpstreamItCannotUse(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-mcp-server")
	for name, cfg := range map[string]GatewayConfig{
		"command not found":   {UpstreamCommand: []string{missing}},
		"command not on PATH": {UpstreamCommand: []string{"agentmesh-no-such-command-on-path"}},
		"HTTP upstream down":  {UpstreamURL: deadURL(t)},
	} {
		cfg.State, cfg.Listen, cfg.RequireUpstream = filepath.Join(t.TempDir(), "never-joined"), "127.0.0.1:0", true
		err := ServeGateway(context.Background(), cfg)
		if !errors.Is(err, ErrUpstream) || errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrUpstream", name, err)
		}
		if _, serr := os.Stat(cfg.State); !os.IsNotExist(serr) {
			t.Errorf("%s: the state directory was touched before the upstream check", name)
		}
	}
}

// TestCheckUpstreamWarnsWithoutRequireUpstream: without RequireUpstream
// an unusable upstream is a warning that names it and says what clients
// get, and a working one says nothing.
func TestCheckUpstreamWarnsWithoutRequireUpstream(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	for name, cfg := range map[string]GatewayConfig{
		"command not found":  {UpstreamCommand: []string{"agentmesh-no-such-command-on-path"}},
		"HTTP upstream down": {UpstreamURL: deadURL(t)},
	} {
		logged.Reset()
		warn, err := checkUpstream(context.Background(), &cfg)
		if err != nil {
			t.Errorf("%s: %v, want only a warning", name, err)
			continue
		}
		warn(log)
		if out := logged.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, upstreamName(&cfg)) || !strings.Contains(out, "upstream_error") {
			t.Errorf("%s: logged %q, want a warning naming the upstream and what clients get", name, out)
		}
	}
	// Any HTTP answer will do, even an error status: the server is there.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "GET not allowed", http.StatusMethodNotAllowed)
	}))
	defer srv.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]GatewayConfig{
		"HTTP upstream answering": {UpstreamURL: srv.URL + "/mcp", RequireUpstream: true},
		"command found":           {UpstreamCommand: []string{exe}, RequireUpstream: true},
	} {
		logged.Reset()
		warn, err := checkUpstream(context.Background(), &cfg)
		if err == nil {
			warn(log)
		}
		if err != nil || logged.Len() != 0 {
			t.Errorf("%s: %v, logged %q; want nothing", name, err, logged.String())
		}
	}
}
