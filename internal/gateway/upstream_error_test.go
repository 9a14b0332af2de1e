package gateway

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayReportsAnUpstreamItCannotReachAsUpstreamNotPolicy: an
// upstream that cannot be started (stdio) or reached (HTTP) is answered
// with CodeUpstream and a message that says so, not as a policy denial,
// and the message does not carry the upstream's address or command.
func TestGatewayReportsAnUpstreamItCannotReachAsUpstreamNotPolicy(t *testing.T) {
	// An address nothing listens on: a listener closed at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String() + "/mcp"
	ln.Close()
	missing := filepath.Join(t.TempDir(), "no-such-mcp-server")
	for _, tc := range []struct {
		name     string
		upstream Upstream
		secret   string
	}{
		{"HTTP upstream down", HTTPUpstream{URL: deadURL}, ln.Addr().String()},
		{"stdio command missing", CommandUpstream{Argv: []string{missing}}, "no-such-mcp-server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{config: func(c *Config) { c.Upstream = tc.upstream }})
			ctx := testContext(t)
			status, _, b := f.rawPost(ctx, f.httpClient(f.fraud), initializeBody, nil)
			d := rpcError(t, b)
			if status != http.StatusBadGateway || d.Code != CodeUpstream || d.Reason != reason.UpstreamError || d.EventID == "" {
				t.Fatalf("got %d %+v, want 502, code %d, %s with an event id", status, d, CodeUpstream, reason.UpstreamError)
			}
			var msg struct {
				Error struct{ Message string } `json:"error"`
			}
			if err := json.Unmarshal(b, &msg); err != nil {
				t.Fatal(err)
			}
			m := msg.Error.Message
			if strings.Contains(m, "policy") || !strings.Contains(m, "upstream") || !strings.Contains(m, d.EventID) || strings.Contains(m, tc.secret) {
				t.Fatalf("message %q: want an upstream failure naming the event, not policy, not %q", m, tc.secret)
			}
		})
	}
}

// TestGatewayLogsEachStdioUpstreamItStartsAndWhenItIsReadyOrFailed: a
// stdio upstream starts per session, which takes seconds with npx, so the
// operator sees a line when one starts and one when it answers or dies
// before answering, with the time it took (on the gateway's clock).
func TestGatewayLogsEachStdioUpstreamItStartsAndWhenItIsReadyOrFailed(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		var log gatewaytest.Log
		f := newFixture(t, fixtureOpts{stdio: true, log: &log})
		ctx := testContext(t)
		f.connect(ctx, f.fraud, "2025-11-25", nil)
		exe := f.gw.cfg.Upstream.(CommandUpstream).Argv[0]
		for _, want := range []string{"serve: starting upstream `" + exe + "` for a new session", "serve: upstream `" + exe + "` ready after "} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("the log lacks %q:\n%s", want, log.String())
			}
		}
	})
	t.Run("failed", func(t *testing.T) {
		var log gatewaytest.Log
		argv := []string{"/bin/sh", "-c", "exit 3"}
		f := newFixture(t, fixtureOpts{log: &log, config: func(c *Config) { c.Upstream = CommandUpstream{Argv: argv} }})
		ctx := testContext(t)
		f.rawPost(ctx, f.httpClient(f.fraud), initializeBody, nil)
		// The answer may reach the client before the process's end is
		// read and logged.
		for _, want := range []string{"serve: starting upstream `/bin/sh -c exit 3` for a new session", "serve: upstream `/bin/sh -c exit 3` failed after "} {
			if err := log.WaitFor(ctx, want); err != nil {
				t.Errorf("%v:\n%s", err, log.String())
			}
		}
		if strings.Contains(log.String(), "ready after") {
			t.Errorf("an upstream that never answered is logged ready:\n%s", log.String())
		}
	})
}
