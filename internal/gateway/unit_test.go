package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestHeaderCheckRequiresHeadersToMatchBody(t *testing.T) {
	call := func(name, meta string) *mcpwire.Message {
		params := `{"name":"` + name + `","arguments":{}`
		if meta != "" {
			params += `,"_meta":{"io.modelcontextprotocol/protocolVersion":"` + meta + `"}`
		}
		params += `}`
		msgs, _, err := mcpwire.Decode([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":`+params+`}`), mcpwire.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return &msgs[0]
	}
	tests := []struct {
		name string
		hdr  map[string][]string
		msg  *mcpwire.Message
		ok   bool
	}{
		{"session version without headers", map[string][]string{"Mcp-Protocol-Version": {"2025-11-25"}}, call("echo", ""), true},
		{"modern with matching headers", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), true},
		{"modern with base64 name", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"=?base64?ZWNobw==?="}}, call("echo", "2026-07-28"), true},
		{"modern without Mcp-Method", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), false},
		{"modern without Mcp-Name", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}}, call("echo", "2026-07-28"), false},
		{"name mismatch", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("drop_table", "2026-07-28"), false},
		{"method mismatch on old version", map[string][]string{"Mcp-Method": {"tools/list"}}, call("echo", ""), false},
		{"repeated Mcp-Name", map[string][]string{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo", "drop_table"}}, call("echo", ""), false},
		{"header and _meta versions differ", map[string][]string{"Mcp-Protocol-Version": {"2025-11-25"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), false},
		{"_meta version without header", map[string][]string{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call("echo", "2026-07-28"), false},
		// The forward passes mirror headers in any case, so the check reads
		// every spelling.
		{"lower-case Mcp-Method mismatch", map[string][]string{"mcp-method": {"tools/list"}}, call("echo", ""), false},
		{"second spelling of Mcp-Name", map[string][]string{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}, "mcp-name": {"drop_table"}}, call("echo", "2026-07-28"), false},
		{"lower-case headers matching the body", map[string][]string{"mcp-protocol-version": {"2026-07-28"}, "mcp-method": {"tools/call"}, "mcp-name": {"echo"}}, call("echo", "2026-07-28"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := headerCheck(tt.hdr, tt.msg)
			if (got == "") != tt.ok {
				t.Fatalf("headerCheck = %q, want ok=%v", got, tt.ok)
			}
		})
	}
}

func TestListChangedNotificationsCarrySubscriptionID(t *testing.T) {
	st := newStream(listAll, json.RawMessage(`"sub-1"`))
	st.post(listTools | listResources | listTemplates)
	msgs := st.messages(st.take())
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2 (tools, resources once)", len(msgs))
	}
	for _, m := range msgs {
		var n struct {
			Method string `json:"method"`
			Params struct {
				Meta map[string]string `json:"_meta"`
			} `json:"params"`
		}
		if err := json.Unmarshal(m, &n); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if n.Params.Meta["io.modelcontextprotocol/subscriptionId"] != "sub-1" {
			t.Fatalf("%s lacks the subscription id", m)
		}
	}
}

func TestEveryFileIsInThePackageDocumentedInDocGo(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if f != "doc.go" && bytes.Contains(b, []byte("\n// Package gateway")) {
			t.Errorf("%s repeats the package doc; keep it in doc.go", f)
		}
	}
	b, err := os.ReadFile("doc.go")
	if err != nil || !bytes.HasPrefix(b, []byte("// Package gateway ")) || !bytes.Contains(b, []byte("# Threat model")) {
		t.Fatal("doc.go must hold the package doc with its threat model")
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestGatewayReapsIdleSessionsButNotOpenStreams(t *testing.T) {
	for _, stdio := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "stdio"}[stdio], func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
			f := newFixture(t, fixtureOpts{stdio: stdio, now: clock.Now})
			ctx := testContext(t)
			c := f.httpClient(f.fraud)
			idle := f.rawSession(ctx, c, "2025-11-25")
			streaming := f.rawSession(ctx, c, "2025-11-25")

			// The second session keeps a GET stream open.
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("Mcp-Session-Id", streaming)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET stream: status %d", resp.StatusCode)
			}

			clock.Advance(defaultIdleTimeout - time.Minute)
			if n := f.gw.reapIdle(); n != 0 {
				t.Fatalf("reaped %d sessions before the idle timeout", n)
			}
			clock.Advance(2 * time.Minute)
			if n := f.gw.reapIdle(); n != 1 {
				t.Fatalf("reaped %d sessions after the idle timeout, want 1 (the idle one)", n)
			}
			hdr := func(sid string) map[string]string {
				return map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
			}
			call := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}`
			if status, _, b := f.rawPost(ctx, c, call, hdr(idle)); status != http.StatusNotFound {
				t.Fatalf("call on the reaped session: status %d %s, want 404", status, b)
			}
			if status, _, b := f.rawPost(ctx, c, call, hdr(streaming)); status != http.StatusOK {
				t.Fatalf("call on the streaming session: status %d %s", status, b)
			}
			found := false
			for _, e := range f.rec.Events() {
				if e.Kind == audit.KindSession && e.Session == idle && e.Reason == reason.Idle && e.Outcome == "expired" {
					found = true
				}
			}
			if !found {
				t.Fatal("no audit event for the reaped session")
			}
		})
	}
}

// TestDecideNamesTheSubscriptionItDenies: the resource URIs of a
// subscriptions/listen are decided one by one, and the verdict (so the
// audit event) names the one denied, not the first.
func TestDecideNamesTheSubscriptionItDenies(t *testing.T) {
	fraud := gatewaytest.ID(t, identity.KindAgent, "fraud")
	db := gatewaytest.ID(t, identity.KindTool, "payments-db")
	p := &peerInfo{
		node:  policy.Node{Name: fraud.Name, Kind: fraud.Kind},
		state: &admission.State{Policy: compile(t, excludePolicy, "v1"), Self: policy.Node{Name: db.Name, Kind: db.Kind}},
	}
	listen := func(uris string) *mcpwire.Message {
		msgs, _, err := mcpwire.Decode([]byte(`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":[`+uris+`]}}}`), mcpwire.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return &msgs[0]
	}
	g := &Gateway{}
	if v := g.decide(p, listen(`"db://public/a","db://public/b"`)); !v.allow || v.resource != "db://public/a" {
		t.Fatalf("all granted: allow=%v resource=%q, want an allow naming the first URI", v.allow, v.resource)
	}
	v := g.decide(p, listen(`"db://public/a","db://public/secret","db://public/b"`))
	if v.allow || v.reason != reason.NotGranted || v.resource != "db://public/secret" {
		t.Fatalf("one excluded: allow=%v reason=%q resource=%q, want not_granted naming db://public/secret", v.allow, v.reason, v.resource)
	}
}

// TestDecideRefusesWhatItCannotReadBeforeAskingForAPolicy: without a
// policy every request the policy would decide is denied (no_policy), but
// a malformed or unknown request is still refused as what it is, and a
// listen that names no resource still passes.
func TestDecideRefusesWhatItCannotReadBeforeAskingForAPolicy(t *testing.T) {
	p := &peerInfo{state: &admission.State{}}
	g := &Gateway{}
	for _, tt := range []struct {
		body string
		want reason.Code
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`, reason.NoPolicy},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"echo"}}`, reason.Malformed},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/invent","params":{}}`, reason.UnknownMethod},
		{`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{}}}`, reason.Allowed},
	} {
		msgs, _, err := mcpwire.Decode([]byte(tt.body), mcpwire.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if v := g.decide(p, &msgs[0]); v.reason != tt.want || v.allow != (tt.want == reason.Allowed) {
			t.Errorf("%s: allow=%v reason=%q, want %q", tt.body, v.allow, v.reason, tt.want)
		}
	}
}
