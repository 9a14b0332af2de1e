package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// callText calls tool name with args and returns its text output.
func callText(ctx context.Context, cs *mcp.ClientSession, name string, args map[string]any) (string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return "", err
	}
	if res.IsError {
		return "", &toolError{res}
	}
	if len(res.Content) == 0 {
		return "", nil
	}
	var out struct {
		Text string `json:"text"`
	}
	if tc, ok := res.Content[0].(*mcp.TextContent); ok {
		if json.Unmarshal([]byte(tc.Text), &out) == nil {
			return out.Text, nil
		}
		return tc.Text, nil
	}
	return "", nil
}

type toolError struct{ res *mcp.CallToolResult }

func (e *toolError) Error() string { return "tool error" }

// versions are the protocol versions the SDK client can be pinned to; ""
// is the SDK's default (2026-07-28, stateless).
var versions = []string{"2025-03-26", "2025-06-18", "2025-11-25", ""}

func versionName(v string) string {
	if v == "" {
		return "default"
	}
	return v
}

func TestGatewayEnforcesToolCallsInEveryProtocolVersion(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		for _, v := range versions {
			t.Run(versionName(v), func(t *testing.T) {
				ctx := testContext(t)
				cs := f.connect(ctx, f.fraud, v, nil)
				want := v
				if want == "" {
					want = "2026-07-28" // stateless, through server/discover
				}
				if got := cs.InitializeResult().ProtocolVersion; got != want {
					t.Fatalf("negotiated %s, want %s", got, want)
				}
				got, err := callText(ctx, cs, "echo", map[string]any{"text": "hi"})
				if err != nil || got != "hi" {
					t.Fatalf("echo = %q, %v; want hi", got, err)
				}
				before := f.up.Calls.Count("tool:drop_table")
				_, err = callText(ctx, cs, "drop_table", map[string]any{"text": "users"})
				d := denialOf(t, err)
				if d.Code != CodeDenied || d.Reason == "" || d.EventID == "" {
					t.Fatalf("denial = %+v, want code %d with reason and event id", d, CodeDenied)
				}
				ev, ok := f.rec.ByID(d.EventID)
				if !ok || ev.Decision != audit.Deny || ev.Tool != "drop_table" || ev.Reason != d.Reason || ev.Kind != audit.KindRequest {
					t.Fatalf("audit event %+v (found %v) does not match denial %+v", ev, ok, d)
				}
				if ev.Src != f.peers["fraud"].ID.String() || ev.Dst != f.gwID.String() || ev.PolicyVersion == "" {
					t.Fatalf("audit event src/dst/version = %q %q %q", ev.Src, ev.Dst, ev.PolicyVersion)
				}
				if n := f.up.Calls.Count("tool:drop_table"); n != before {
					t.Fatalf("denied call reached the upstream (%d calls)", n-before)
				}
			})
		}
		if f.up.Received("drop_table") {
			t.Fatal("upstream received a body naming drop_table")
		}
	})
}

func TestGatewayRecordsAllowedCallWithRuleAndArgsHash(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		ctx := testContext(t)
		cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
		if _, err := callText(ctx, cs, "echo", map[string]any{"text": "audited"}); err != nil {
			t.Fatal(err)
		}
		ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
			return e.Kind == audit.KindRequest && e.Tool == "echo"
		})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Decision != audit.Allow || ev.Rule != "0" || ev.ArgsSHA256 == "" || ev.Session == "" || ev.Outcome != "ok" || ev.SrcAddr == "" {
			t.Fatalf("allowed event = %+v", ev)
		}
	})
}

func TestGatewayRecordsAllowedCallBeforeTheClientSeesTheAnswer(t *testing.T) {
	for _, stdio := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "stdio"}[stdio], func(t *testing.T) {
			f := newFixture(t, fixtureOpts{stdio: stdio})
			ctx := testContext(t)
			cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
			for i := range 20 {
				text := fmt.Sprintf("call-%d", i)
				if _, err := callText(ctx, cs, "echo", map[string]any{"text": text}); err != nil {
					t.Fatal(err)
				}
				// No waiting: the event must be there already.
				n := 0
				for _, e := range f.rec.Events() {
					if e.Kind == audit.KindRequest && e.Tool == "echo" && e.Decision == audit.Allow {
						n++
					}
				}
				if n != i+1 {
					t.Fatalf("after %d answered calls the recorder holds %d allowed echo events", i+1, n)
				}
			}
		})
	}
}

func TestGatewayWithholdsAnswerWhenAuditFails(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := testContext(t)
	c := f.httpClient(f.fraud)
	sid := f.rawSession(ctx, c, "2025-11-25")
	f.rec.FailWith(errors.New("disk full"))
	status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"unaudited-secret"}}}`,
		map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"})
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, body %s; want 503", status, b)
	}
	if d := rpcError(t, b); d.Code != CodeRejected || d.Reason != reason.AuditFailed || d.EventID == "" {
		t.Fatalf("refusal = %+v", d)
	}
	if strings.Contains(string(b), "unaudited-secret") {
		t.Fatalf("the upstream's answer reached the client: %s", b)
	}
}

func TestGatewayFiltersListsToVisibleNames(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		for _, v := range versions {
			t.Run(versionName(v), func(t *testing.T) {
				ctx := testContext(t)
				cs := f.connect(ctx, f.fraud, v, nil)
				tools, err := cs.ListTools(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, tl := range tools.Tools {
					names = append(names, tl.Name)
				}
				slices.Sort(names)
				if want := []string{"big", "echo", "progress", "query", "sample"}; !slices.Equal(names, want) {
					t.Fatalf("tools = %v, want %v", names, want)
				}
				prompts, err := cs.ListPrompts(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "greet" {
					t.Fatalf("prompts = %+v, want only greet", prompts.Prompts)
				}
				res, err := cs.ListResources(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Resources) != 1 || res.Resources[0].URI != "db://public/a" {
					t.Fatalf("resources = %+v, want only db://public/a", res.Resources)
				}
				if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "db://private/b"}); denialOf(t, err).Code != CodeDenied {
					t.Fatal("private resource read not denied")
				}
				if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "db://public/a"}); err != nil {
					t.Fatalf("public resource: %v", err)
				}
				if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "secret"}); denialOf(t, err).Code != CodeDenied {
					t.Fatal("secret prompt not denied")
				}
				if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet"}); err != nil {
					t.Fatalf("greet: %v", err)
				}
			})
		}
		if f.up.Calls.Count("resource:db://private/b") != 0 || f.up.Calls.Count("prompt:secret") != 0 {
			t.Fatal("denied resource or prompt reached the upstream")
		}
	})
}

func TestGatewayEvaluatesWhenOnArguments(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		ctx := testContext(t)
		cs := f.connect(ctx, f.fraud, "2025-06-18", nil)
		tests := []struct {
			sql   string
			allow bool
		}{
			{"select * from t", true},
			{"DELETE FROM t", false},
			{"select 1; delete from t", false},
			{"select deleted_at from t", true},
		}
		for _, tt := range tests {
			got, err := callText(ctx, cs, "query", map[string]any{"sql": tt.sql})
			if tt.allow {
				if err != nil || got != "rows for "+tt.sql {
					t.Errorf("query %q = %q, %v; want allowed", tt.sql, got, err)
				}
				continue
			}
			if d := denialOf(t, err); d.Code != CodeDenied || d.Reason != "when_false" {
				t.Errorf("query %q denial = %+v, want when_false", tt.sql, d)
			}
			if f.up.Received(tt.sql) {
				t.Errorf("query %q reached the upstream", tt.sql)
			}
		}
	})
}

func TestGatewayDeniesUnknownMethod(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		ctx := testContext(t)
		c := f.httpClient(f.fraud)
		sid := f.rawSession(ctx, c, "2025-11-25")
		hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
		status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":5,"method":"admin/shutdown","params":{}}`, hdr)
		if d := rpcError(t, b); status != http.StatusOK || d.Code != CodeDenied || d.Reason != reason.UnknownMethod {
			t.Fatalf("unknown method: %d %+v", status, d)
		}
		if f.up.Received("admin/shutdown") {
			t.Fatal("unknown method reached the upstream")
		}
	})
}

func TestGatewayRefusesSmuggling(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		ctx := testContext(t)
		c := f.httpClient(f.fraud)
		sid := f.rawSession(ctx, c, "2025-11-25")
		hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
		tests := []struct {
			name   string
			body   string
			hdr    map[string]string
			code   int
			reason reason.Code
		}{
			{"duplicate name keys", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"drop_table","arguments":{}}}`, nil, CodeRejected, reason.Malformed},
			{"case-variant name key", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","Name":"drop_table","arguments":{}}}`, nil, CodeRejected, reason.Malformed},
			{"unicode-escaped denied tool", `{"jsonrpc":"2.0","id":3,"method":"tools\u002fcall","params":{"name":"drop\u005ftable","arguments":{}}}`, nil, CodeDenied, "not_granted"},
			{"batch mixing allowed and denied", `[{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}},{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"drop_table","arguments":{}}}]`, nil, -32600, reason.BatchRejected},
			{"Mcp-Method header mismatch", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"drop_table","arguments":{}}}`, map[string]string{"Mcp-Method": "tools/list"}, CodeHeaderMismatch, reason.HeaderMismatch},
			{"Mcp-Name header mismatch", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"drop_table","arguments":{}}}`, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, CodeHeaderMismatch, reason.HeaderMismatch},
			{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{\"name\":\"drop_table\xff\",\"arguments\":{}}}", nil, CodeRejected, reason.Malformed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := map[string]string{}
				for k, v := range hdr {
					h[k] = v
				}
				for k, v := range tt.hdr {
					h[k] = v
				}
				_, _, b := f.rawPost(ctx, c, tt.body, h)
				d := rpcError(t, b)
				if d.Code != tt.code || (tt.reason != "" && d.Reason != tt.reason) || d.EventID == "" {
					t.Fatalf("got %+v, want code %d reason %q", d, tt.code, tt.reason)
				}
				if _, ok := f.rec.ByID(d.EventID); !ok {
					t.Fatalf("event %s not recorded", d.EventID)
				}
			})
		}
		if f.up.Received("drop_table") || f.up.Received("drop\\u005ftable") || f.up.Calls.Count("tool:drop_table") != 0 || f.up.Calls.Count("tool:echo") != 0 {
			t.Fatal("a smuggled request reached the upstream")
		}
		// An escaped allowed name is evaluated as what it means, and forwarded
		// byte for byte.
		body := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"\u0065cho","arguments":{"text":"escaped"}}}`
		status, _, b := f.rawPost(ctx, c, body, hdr)
		if status != http.StatusOK || !strings.Contains(string(b), "escaped") || !f.up.Received(body) {
			t.Fatalf("escaped echo: %d %s", status, b)
		}
	})
}

func TestGatewayRefusesSessionOfAnotherIdentity(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := testContext(t)
	sid := f.rawSession(ctx, f.httpClient(f.fraud), "2025-11-25")
	hdr := map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
	status, _, b := f.rawPost(ctx, f.httpClient(f.other), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hijack"}}}`, hdr)
	d := rpcError(t, b)
	if status != http.StatusNotFound || d.Reason != reason.SessionOwnerMismatch {
		t.Fatalf("replayed session: %d %+v", status, d)
	}
	if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Src != f.peers["other"].ID.String() || ev.Session != sid {
		t.Fatalf("audit event %+v", ev)
	}
	if f.up.Received("hijack") {
		t.Fatal("hijacked request reached the upstream")
	}
}

func TestGatewayRefusesPeersItDoesNotAdmit(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		ctx := testContext(t)
		stale := f.mesh.Issue(t, f.peers["fraud"].ID, "inc0")
		tests := []struct {
			name   string
			client *http.Client
			reason reason.Code
		}{
			{"unknown peer", f.httpClient(f.outsider), reason.UnknownPeer},
			{"earlier incarnation", f.httpClient(stale), reason.StaleIncarnation},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status, _, b := f.rawPost(ctx, tt.client, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`, nil)
				d := rpcError(t, b)
				if status != http.StatusForbidden || d.Reason != tt.reason {
					t.Fatalf("got %d %+v, want 403 %s", status, d, tt.reason)
				}
				ev, ok := f.rec.ByID(d.EventID)
				if !ok || ev.Kind != audit.KindConnection || ev.Decision != audit.Deny {
					t.Fatalf("audit event %+v", ev)
				}
			})
		}
		// A peer the policy does not link is refused too.
		f.gw.Update(f.state(`{"grants":[{"src":["agent:other"],"dst":["tool:payments-db"],"tools":["echo"]}]}`))
		status, _, b := f.rawPost(ctx, f.httpClient(f.fraud), `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`, nil)
		if d := rpcError(t, b); status != http.StatusForbidden || d.Reason != reason.NoGrant {
			t.Fatalf("unlinked peer: %d %+v", status, d)
		}
	})
}

func TestGatewaySendsListChangedAfterUpdate(t *testing.T) {
	for _, v := range []string{"2025-11-25", ""} {
		t.Run(versionName(v), func(t *testing.T) {
			forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
				f := newFixture(t, o)
				ctx := testContext(t)
				changed := make(chan struct{}, 4)
				cs := f.connect(ctx, f.fraud, v, &mcp.ClientOptions{
					ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
				})
				if _, err := cs.ListTools(ctx, nil); err != nil {
					t.Fatal(err)
				}
				f.gw.Update(f.state(noEchoPolicy))
				select {
				case <-changed:
				case <-ctx.Done():
					t.Fatal("no tools/list_changed after the policy removed echo")
				}
				tools, err := cs.ListTools(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				for _, tl := range tools.Tools {
					if tl.Name == "echo" {
						t.Fatal("echo still listed")
					}
				}
				if _, err := callText(ctx, cs, "echo", map[string]any{"text": "x"}); denialOf(t, err).Code != CodeDenied {
					t.Fatal("echo still allowed in the open session")
				}
			})
		})
	}
}

func TestGatewayClosesRevokedPeer(t *testing.T) {
	forHTTPKinds(t, func(t *testing.T, o fixtureOpts) {
		f := newFixture(t, o)
		ctx := testContext(t)
		cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
		if _, err := callText(ctx, cs, "echo", map[string]any{"text": "before"}); err != nil {
			t.Fatal(err)
		}
		fraud := f.peers["fraud"].ID
		f.gw.Update(f.state(basePolicy, func(p map[identity.Name]admission.Peer) {
			pe := p[fraud.Name]
			pe.Revoked = true
			p[fraud.Name] = pe
		}))
		for _, tc := range f.gw.conns.snapshot() {
			if p := tc.peer(); p != nil && p.id == fraud {
				// Closed connections leave the table asynchronously; the
				// connection itself must already be unusable.
				if _, err := tc.conn.Write([]byte("x")); err == nil {
					t.Fatal("revoked peer's connection still open")
				}
			}
		}
		for _, s := range f.gw.sessions.all() {
			if s.owner == fraud {
				t.Fatalf("revoked peer's session %s still open", s.id)
			}
		}
		if _, err := callText(ctx, cs, "echo", map[string]any{"text": "after"}); err == nil {
			t.Fatal("revoked peer could still call")
		}
		// A new session is refused with revoked, and a message that says what
		// happened and what to do, not a policy denial.
		status, _, b := f.rawPost(ctx, f.httpClient(f.fraud), initializeBody, nil)
		var refused struct {
			Error struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &refused); err != nil {
			t.Fatalf("%d %s: %v", status, b, err)
		}
		if d := rpcError(t, b); d.Reason != reason.Revoked || refused.Error.Code != CodeDenied ||
			!strings.Contains(refused.Error.Message, "revoked") || !strings.Contains(refused.Error.Message, "join again") || strings.Contains(refused.Error.Message, "policy") {
			t.Errorf("a new session of the revoked peer: %d %s, want %d revoked, saying to join again, not policy", status, b, CodeDenied)
		}
		if f.up.Received("after") {
			t.Fatal("revoked peer's call reached the upstream")
		}
		if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
			return e.Kind == audit.KindSession && e.Src == fraud.String() && e.Reason == reason.Revoked
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
			return e.Kind == audit.KindConnection && e.Src == fraud.String() && e.Reason == reason.Revoked && e.Outcome == "closed"
		}); err != nil {
			t.Fatalf("closed connection not audited: %v", err)
		}
	})
}

func TestGatewayPassesProgressAndSampling(t *testing.T) {
	for _, v := range []string{"2025-06-18", "2025-11-25"} {
		t.Run(versionName(v), func(t *testing.T) {
			f := newFixture(t, fixtureOpts{})
			ctx := testContext(t)
			progress := make(chan struct{}, 8)
			cs := f.connect(ctx, f.fraud, v, &mcp.ClientOptions{
				ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { progress <- struct{}{} },
				CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
					return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "sampled"}}, nil
				},
			})
			got, err := callText(ctx, cs, "sample", map[string]any{"text": "q"})
			if err != nil || got != "sampled" {
				t.Fatalf("sample = %q, %v", got, err)
			}
			params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"size": 3}}
			params.SetProgressToken("p1")
			if _, err := cs.CallTool(ctx, params); err != nil {
				t.Fatal(err)
			}
			// The SDK delivers notifications asynchronously.
			for i := range 3 {
				select {
				case <-progress:
				case <-ctx.Done():
					t.Fatalf("%d progress notifications, want 3", i)
				}
			}
		})
	}
}

// TestStdioProgressPrecedesResult checks that a stdio upstream's progress
// notifications go out on the stream of the request they belong to, ahead
// of its result, for both kinds of upstream.
func TestStdioProgressPrecedesResult(t *testing.T) {
	for _, stdio := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "stdio"}[stdio], func(t *testing.T) {
			f := newFixture(t, fixtureOpts{stdio: stdio})
			ctx := testContext(t)
			c := f.httpClient(f.fraud)
			sid := f.rawSession(ctx, c, "2025-11-25")
			status, _, b := f.rawPost(ctx, c, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"progress","arguments":{"size":3},"_meta":{"progressToken":"tok-5"}}}`,
				map[string]string{"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"})
			if status != http.StatusOK {
				t.Fatalf("status %d: %s", status, b)
			}
			body := string(b)
			result := strings.Index(body, `"id":5`)
			if result < 0 {
				t.Fatalf("no result on the request's stream: %s", body)
			}
			if n := strings.Count(body[:result], `"method":"notifications/progress"`); n != 3 {
				t.Fatalf("%d progress notifications before the result on the request's stream, want 3: %s", n, body)
			}
		})
	}
}

func TestGatewayStreamsLargeResults(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := testContext(t)
	cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
	const size = 10 << 20
	got, err := callText(ctx, cs, "big", map[string]any{"size": size})
	if err != nil || len(got) != size {
		t.Fatalf("big: %d bytes, %v", len(got), err)
	}
}

func TestGatewayServesStdioUpstream(t *testing.T) {
	f := newFixture(t, fixtureOpts{stdio: true})
	ctx := testContext(t)
	changed := make(chan struct{}, 4)
	cs := f.connect(ctx, f.fraud, "", &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	if got, err := callText(ctx, cs, "echo", map[string]any{"text": "stdio"}); err != nil || got != "stdio" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	if _, err := callText(ctx, cs, "drop_table", nil); denialOf(t, err).Code != CodeDenied {
		t.Fatal("drop_table not denied")
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) != 5 {
		t.Fatalf("%d tools listed, want 5", len(tools.Tools))
	}
	f.gw.Update(f.state(noEchoPolicy))
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("no tools/list_changed from the stdio session")
	}
	// Another identity gets its own process, and cannot use this session.
	cs2 := f.connect(ctx, f.other, "2025-11-25", nil)
	if cs2.ID() == cs.ID() {
		t.Fatal("two identities share a session")
	}
	if got, err := callText(ctx, cs2, "echo", map[string]any{"text": "other"}); err != nil || got != "other" {
		t.Fatalf("other echo = %q, %v", got, err)
	}
	// Revoking the peer ends its session and process.
	f.gw.Update(f.state(noEchoPolicy, func(p map[identity.Name]admission.Peer) { delete(p, "fraud") }))
	if _, err := callText(ctx, cs, "query", map[string]any{"sql": "select"}); err == nil {
		t.Fatal("removed peer could still call")
	}
}
