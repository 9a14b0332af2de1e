package gateway

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// decision is what a client and the audit trail see of one request, with
// what differs by run (ids, times, addresses, hashes of the run's
// session) left out.
type decision struct {
	Status                  int
	Code                    int
	Reason                  reason.Code
	Kind                    audit.Kind
	Decision                audit.Decision
	EventReason             reason.Code
	Outcome, Rule, Tool     string
	Method, Resource, Agent string
}

// TestHandlerUpstreamDecidesAndAuditsAsHTTPUpstream runs one table of
// requests through a gateway in front of an HTTP MCP server and through a
// gateway calling the same server in-process, and requires the same
// statuses, JSON-RPC codes, reason codes and audit events from both.
func TestHandlerUpstreamDecidesAndAuditsAsHTTPUpstream(t *testing.T) {
	const v = "2025-11-25"
	calls := []struct {
		name, as, body string
	}{
		{"allowed tool", "fraud", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`},
		{"tool outside the grant", "fraud", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop_table","arguments":{"text":"users"}}}`},
		{"when false", "fraud", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"query","arguments":{"sql":"DELETE FROM t"}}}`},
		{"when true", "fraud", `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"query","arguments":{"sql":"select 1"}}}`},
		{"unknown method", "fraud", `{"jsonrpc":"2.0","id":5,"method":"admin/shutdown","params":{}}`},
		{"filtered list", "fraud", `{"jsonrpc":"2.0","id":6,"method":"tools/list","params":{}}`},
		{"private resource", "fraud", `{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"db://private/b"}}`},
		{"batch", "fraud", `[{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}}]`},
		{"other agent, tool it lacks", "other", `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"query","arguments":{"sql":"select 1"}}}`},
		{"peer not in the netmap", "outsider", `{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`},
	}
	run := func(t *testing.T, o fixtureOpts) []decision {
		f := newFixture(t, o)
		ctx := testContext(t)
		clients := map[string]*http.Client{"fraud": f.httpClient(f.fraud), "other": f.httpClient(f.other), "outsider": f.httpClient(f.outsider)}
		sessions := map[string]string{"fraud": f.rawSession(ctx, clients["fraud"], v), "other": f.rawSession(ctx, clients["other"], v)}
		var out []decision
		for _, c := range calls {
			hdr := map[string]string{"Mcp-Protocol-Version": v}
			if sid := sessions[c.as]; sid != "" {
				hdr["Mcp-Session-Id"] = sid
			}
			status, _, b := f.rawPost(ctx, clients[c.as], c.body, hdr)
			d := decision{Status: status}
			var eventID string
			if strings.Contains(string(b), `"error"`) {
				e := rpcError(t, b)
				d.Code, d.Reason, eventID = e.Code, e.Reason, e.EventID
			}
			var ev audit.Event
			var ok bool
			if eventID != "" {
				ev, ok = f.rec.ByID(eventID)
			} else {
				// The newest event of the request that was allowed.
				evs := f.rec.Events()
				for i := len(evs) - 1; i >= 0 && !ok; i-- {
					ev, ok = evs[i], evs[i].Kind == audit.KindRequest
				}
			}
			if !ok {
				t.Fatalf("%s: no audit event (response %d %s)", c.name, status, b)
			}
			d.Kind, d.Decision, d.EventReason, d.Outcome, d.Rule = ev.Kind, ev.Decision, ev.Reason, string(ev.Outcome), ev.Rule
			d.Tool, d.Method, d.Resource, d.Agent = ev.Tool, ev.Method, ev.Resource, ev.Src
			out = append(out, d)
		}
		return out
	}
	got := map[string][]decision{}
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		name := map[bool]string{false: "http", true: "in-process"}[o.inProcess]
		got[name] = run(t, o)
	})
	h, p := got["http"], got["in-process"]
	if len(h) != len(calls) || len(p) != len(calls) {
		t.Fatalf("runs incomplete: %d and %d of %d", len(h), len(p), len(calls))
	}
	for i, c := range calls {
		if h[i] != p[i] {
			t.Errorf("%s:\n  http       %+v\n  in-process %+v", c.name, h[i], p[i])
		}
	}
	// The table means something only if it holds allows and denials.
	var reasons []reason.Code
	for _, d := range h {
		reasons = append(reasons, d.EventReason)
	}
	for _, want := range []reason.Code{reason.NotGranted, reason.WhenFalse, reason.UnknownMethod, reason.UnknownPeer} {
		if !slices.Contains(reasons, want) {
			t.Errorf("no %s among the table's decisions %v", want, reasons)
		}
	}
	if h[0].Decision != audit.Allow || h[0].Outcome != "ok" {
		t.Errorf("allowed call: %+v", h[0])
	}
}

// TestHandlerUpstreamPanicIsUpstreamError: a handler that panics before it
// answers is an upstream failure, audited as such, and the gateway goes
// on serving.
func TestHandlerUpstreamPanicIsUpstreamError(t *testing.T) {
	panicky := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	// upstream only keeps the fixture from starting its MCP server.
	g := newFixture(t, fixtureOpts{config: func(c *Config) { c.Upstream = HandlerUpstream{Handler: panicky} }, upstream: http.NotFoundHandler()})
	ctx := testContext(t)
	c := g.httpClient(g.fraud)
	for i := range 2 {
		status, _, b := g.rawPost(ctx, c, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`, i), nil)
		d := rpcError(t, b)
		if status != http.StatusBadGateway || d.Code != CodeUpstream || d.Reason != reason.UpstreamError {
			t.Fatalf("call %d: %d %+v, want 502 upstream_error", i, status, d)
		}
		ev, ok := g.rec.ByID(d.EventID)
		if !ok || ev.Decision != audit.Allow || ev.Outcome != audit.OutcomeUpstreamError {
			t.Fatalf("call %d: audit event %+v (found %v)", i, ev, ok)
		}
	}
}

func TestHandlerUpstreamRequiresHandler(t *testing.T) {
	_, err := New(Config{Upstream: HandlerUpstream{}, Audit: gatewaytest.NewRecorder()}, nil)
	if err == nil || !strings.Contains(err.Error(), "Handler is nil") {
		t.Fatalf("New with a nil handler: %v", err)
	}
}
