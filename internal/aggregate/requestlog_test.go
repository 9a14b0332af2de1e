package aggregate

import (
	"context"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSessionsOpenedForA2026RequestSpeakTheirOwnVersion: the session the
// aggregator opens at a service over Streamable HTTP for a 2026-07-28
// client's request that asks for log messages is initialized as the
// 2025-11-25 session it is, though the SDK's HTTP client would take the
// header of its initialize from the request's context (2026-07-28),
// which the service refuses on an initialize. (The subscription carrier,
// opened the same way, is covered by the e2e test with a real gateway.)
func TestSessionsOpenedForA2026RequestSpeakTheirOwnVersion(t *testing.T) {
	a := httpUpstream(t, routedUpstream(make(chan string, 2)))
	a.Update(Snapshot{Services: []Service{{Name: "svc", Addr: "1"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.WaitSettled(ctx); err != nil {
		t.Fatal(err)
	}
	e := serveHTTP(t, a)
	logs := make(chan *mcp.LoggingMessageParams, 16)
	cs := e.connect(t, "c", protocol2026, &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) { logs <- req.Params }})
	if got := callText(t, cs, &mcp.CallToolParams{Name: "svc__log", Meta: mcp.Meta{mcp.MetaKeyLogLevel: "info"}}); got != "logged" {
		t.Fatalf("log: %q", got)
	}
	select {
	case m := <-logs:
		if m.Level != "info" || m.Logger != "svc/up" {
			t.Errorf("log message %+v, want svc/up's info", m)
		}
	case <-ctx.Done():
		t.Fatal("the request's service log message never came: its session was not opened")
	}
}
