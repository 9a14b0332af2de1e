package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// taskUpstream is a Streamable HTTP MCP server that hands out a session id
// on initialize but otherwise does not care about sessions; it answers a
// task-augmented tools/call with a task handle whose id is the call's
// "text" argument (MCP 2025-11-25 shape for params.task, 2026-07-28 shape
// over SSE when _meta declares the tasks extension), answers tasks/* with
// a small result and tasks/list with three tasks, and answers a GET with
// the replay in getReplay.
type taskUpstream struct {
	mu        sync.Mutex
	bodies    []string
	headers   []http.Header
	getReplay string
	sessions  int
}

func (u *taskUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.bodies...)
}

// requests counts the requests the upstream got.
func (u *taskUpstream) requests() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.headers)
}

func (u *taskUpstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers[len(u.headers)-1]
}

func (u *taskUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.headers = append(u.headers, r.Header.Clone())
	u.mu.Unlock()
	if r.Method == http.MethodGet {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, u.getReplay)
		return
	}
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.bodies = append(u.bodies, string(b))
	u.mu.Unlock()
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Task      json.RawMessage `json:"task"`
			TaskID    string          `json:"taskId"`
			Arguments struct {
				Text string `json:"text"`
			} `json:"arguments"`
			Meta json.RawMessage `json:"_meta"`
		} `json:"params"`
	}
	if json.Unmarshal(b, &m) != nil || m.ID == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	result := `{}`
	sse := false
	switch m.Method {
	case "initialize":
		u.mu.Lock()
		u.sessions++
		w.Header().Set("Mcp-Session-Id", fmt.Sprintf("up-%d", u.sessions))
		u.mu.Unlock()
		result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"tasks":{"list":{},"cancel":{},"requests":{"tools":{"call":{}}}}},"serverInfo":{"name":"tasks","version":"1"}}`
	case "tools/call":
		switch {
		case m.Params.Task != nil:
			result = `{"task":{"taskId":"` + m.Params.Arguments.Text + `","status":"working","createdAt":"2025-11-25T10:30:00Z","lastUpdatedAt":"2025-11-25T10:30:00Z","ttl":60000}}`
		case bytes.Contains(m.Params.Meta, []byte("io.modelcontextprotocol/tasks")):
			result = `{"resultType":"task","taskId":"` + m.Params.Arguments.Text + `","status":"working","createdAt":"2026-07-28T10:30:00Z","lastUpdatedAt":"2026-07-28T10:30:00Z","ttlMs":60000}`
			sse = true
		default:
			result = `{"content":[{"type":"text","text":"` + m.Params.Arguments.Text + `"}]}`
		}
	case "tasks/get", "tasks/result", "tasks/cancel", "tasks/update":
		result = `{"taskId":"` + m.Params.TaskID + `","status":"completed","content":[{"type":"text","text":"result of ` + m.Params.TaskID + `"}]}`
	case "tools/list":
		result = `{"tools":[` +
			`{"name":"echo","inputSchema":{"type":"object","properties":{"text":{"type":"string","x-mcp-header":"Text"},"opts":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"}}}}}},` +
			`{"name":"query","inputSchema":{"type":"object","properties":{"sql":{"type":"string"}}}},` +
			`{"name":"drop_table","inputSchema":{"type":"object","properties":{"table":{"type":"string","x-mcp-header":"Table"}}}}]}`
	case "tasks/list":
		result = `{"tasks":[{"taskId":"task-A","status":"working"},{"taskId":"task-B","status":"working"},{"taskId":"task-Z","status":"completed"}],"nextCursor":"n"}`
	}
	resp := `{"jsonrpc":"2.0","id":` + string(m.ID) + `,"result":` + result + `}`
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "id: 7\nevent: message\ndata: "+resp+"\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, resp)
}

func call(id int, method, params string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, id, method, params)
}

func TestGatewayBindsTasksToTheIdentityThatCreatedThem(t *testing.T) {
	up := &taskUpstream{}
	f := newFixture(t, fixtureOpts{upstream: up})
	ctx := testContext(t)
	fraud, other := f.httpClient(f.fraud), f.httpClient(f.other)

	// agent:fraud creates two tasks, one per protocol generation.
	if status, _, b := f.rawPost(ctx, fraud, call(1, "tools/call", `{"name":"echo","arguments":{"text":"task-A"},"task":{"ttl":60000}}`), nil); status != 200 || !strings.Contains(string(b), `"taskId":"task-A"`) {
		t.Fatalf("task-augmented call: %d %s", status, b)
	}
	meta := `"_meta":{"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}`
	if status, _, b := f.rawPost(ctx, fraud, call(2, "tools/call", `{"name":"echo","arguments":{"text":"task-C"},`+meta+`}`), nil); status != 200 || !strings.Contains(string(b), `"taskId":"task-C"`) {
		t.Fatalf("2026-07-28 task call: %d %s", status, b)
	}

	// The owner polls and feeds its tasks.
	for i, body := range []string{
		call(3, "tasks/get", `{"taskId":"task-A"}`),
		call(4, "tasks/result", `{"taskId":"task-A"}`),
		call(5, "tasks/update", `{"taskId":"task-C","inputResponses":{}}`),
	} {
		if status, _, b := f.rawPost(ctx, fraud, body, nil); status != 200 || !strings.Contains(string(b), "result of task-") {
			t.Fatalf("owner request %d: %d %s", i, status, b)
		}
	}

	// Nobody else reaches them, nor anything unknown, and nothing of it is
	// forwarded.
	refused := []struct {
		name   string
		c      *http.Client
		body   string
		code   int
		reason reason.Code
	}{
		{"other gets", other, call(10, "tasks/get", `{"taskId":"task-A"}`), CodeRejected, reason.UnknownTask},
		{"other fetches the result", other, call(11, "tasks/result", `{"taskId":"task-A"}`), CodeRejected, reason.UnknownTask},
		{"other cancels", other, call(12, "tasks/cancel", `{"taskId":"task-A"}`), CodeRejected, reason.UnknownTask},
		{"other gives input", other, call(13, "tasks/update", `{"taskId":"task-C","inputResponses":{"k":{}}}`), CodeRejected, reason.UnknownTask},
		{"unknown task", fraud, call(14, "tasks/get", `{"taskId":"task-Z"}`), CodeRejected, reason.UnknownTask},
		{"task id in another case of key", fraud, call(15, "tasks/get", `{"TaskId":"task-A"}`), CodeRejected, reason.Malformed},
		{"no task id", fraud, call(16, "tasks/get", `{}`), CodeRejected, reason.Malformed},
		{"invented tasks method", fraud, call(17, "tasks/run", `{"taskId":"task-A","name":"drop_table"}`), CodeDenied, reason.UnknownMethod},
	}
	for _, tt := range refused {
		before := len(up.received())
		status, _, b := f.rawPost(ctx, tt.c, tt.body, nil)
		d := rpcError(t, b)
		if status != http.StatusOK || d.Code != tt.code || d.Reason != tt.reason {
			t.Errorf("%s: %d %+v, want %d %s", tt.name, status, d, tt.code, tt.reason)
		}
		if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Reason != tt.reason {
			t.Errorf("%s: audit event %+v (found %v)", tt.name, ev, ok)
		}
		if len(up.received()) != before {
			t.Errorf("%s: forwarded upstream", tt.name)
		}
	}

	// tasks/list shows each caller its own tasks only.
	_, _, b := f.rawPost(ctx, fraud, call(20, "tasks/list", `{}`), nil)
	if !strings.Contains(string(b), `"task-A"`) || strings.Contains(string(b), `"task-B"`) || strings.Contains(string(b), `"task-Z"`) || !strings.Contains(string(b), `"nextCursor":"n"`) {
		t.Fatalf("fraud's tasks/list: %s", b)
	}
	_, _, b = f.rawPost(ctx, other, call(21, "tasks/list", `{}`), nil)
	if strings.Contains(string(b), `"task-`) {
		t.Fatalf("other's tasks/list: %s", b)
	}

	// A task is decided again as the call that created it: once echo is no
	// longer granted, its result is not fetched.
	f.gw.Update(f.state(noEchoPolicy))
	before := len(up.received())
	status, _, b := f.rawPost(ctx, fraud, call(30, "tasks/result", `{"taskId":"task-A"}`), nil)
	d := rpcError(t, b)
	if status != http.StatusOK || d.Code != CodeDenied || d.Reason != "not_granted" {
		t.Fatalf("result after the grant went: %d %+v", status, d)
	}
	if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Tool != "echo" || ev.Method != "tasks/result" {
		t.Fatalf("audit event %+v", ev)
	}
	if len(up.received()) != before {
		t.Fatal("a task of a withdrawn tool was forwarded")
	}
	// Its owner may still stop it.
	if status, _, b := f.rawPost(ctx, fraud, call(31, "tasks/cancel", `{"taskId":"task-A"}`), nil); status != http.StatusOK || strings.Contains(string(b), `"error"`) {
		t.Fatalf("owner's cancel after the grant went: %d %s", status, b)
	}
	if got := up.received(); len(got) != before+1 || !strings.Contains(got[before], "tasks/cancel") {
		t.Fatalf("cancel not forwarded: %v", got[before:])
	}
}

// TestGatewayFiltersReplayedStreamsLikeLiveOnes: a GET stream (which is
// where Last-Event-ID resumption replays what a broken POST stream lost)
// carries a tools/list result, a tasks/list result and a task handle; the
// lists arrive filtered, the task is bound, and Last-Event-ID is passed on
// a session's GET only: without a session the upstream could not tell
// whose stream the id names. A GET without a session id and without
// Last-Event-ID is served (it used to panic).
func TestGatewayFiltersReplayedStreamsLikeLiveOnes(t *testing.T) {
	up := &taskUpstream{}
	up.getReplay = "id: 39\ndata:\n\n" + // a priming event (2025-11-25): an id, empty data
		"id: 44\nevent: message\ndata: " + `{"jsonrpc":"2.0","id":8,"result":{"task":{"taskId":"task-R","status":"working"}}}` + "\n\n" +
		"id: 40\nevent: message\ndata: " + `{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"drop_table"}]}}` + "\n\n" +
		": keep-alive\n\n" +
		"id: 41\nevent: message\ndata: " + `{"jsonrpc":"2.0","id":6,"result":{"tasks":[{"taskId":"task-R"},{"taskId":"task-B"}]}}` + "\n\n" +
		"id: 42\nevent: message\ndata: " + `{"jsonrpc":"2.0","id":7,"result":{"Tools":[{"name":"drop_table"}]}}` + "\n\n" +
		"id: 43\nevent: message\ndata: " + `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}` + "\n\n" +
		"id: 45\nevent: message\ndata: " + `{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"echo"}],"prompts":[{"name":"secret-prompt"}]}}` + "\n\n"
	f := newFixture(t, fixtureOpts{upstream: up})
	ctx := testContext(t)
	fraud := f.httpClient(f.fraud)
	sid := f.rawSession(ctx, fraud, "2025-11-25")
	sess := f.gw.sessions.get(sid)

	// A task-augmented call (id 8) whose answer the POST stream lost: the
	// replay of its task handle binds the task.
	o := taskOrigin{req: policy.Request{Action: policy.ActionTool, Method: "tools/call", Tool: "echo"}, tool: "echo"}
	sess.watchTask(`n:8`, &o)

	get := func(hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "text/event-stream")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := fraud.Do(req)
		if err != nil {
			t.Fatalf("GET %v: %v", hdr, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	resp, got := get(map[string]string{"Mcp-Session-Id": sid, "Last-Event-ID": "39", "Mcp-Name": "drop_table", "Mcp-Param-Table": "payments"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %s", resp.StatusCode, got)
	}
	if strings.Contains(got, "drop_table") || !strings.Contains(got, `{"name":"echo"}`) {
		t.Errorf("replayed tools/list not filtered: %s", got)
	}
	if strings.Contains(got, "task-B") || !strings.Contains(got, "task-R") {
		t.Errorf("replayed tasks/list not filtered to the caller's tasks: %s", got)
	}
	if !strings.Contains(got, "id: 39\ndata:\n\n") || !strings.Contains(got, "id: 40\n") || !strings.Contains(got, ": keep-alive") || !strings.Contains(got, "notifications/message") {
		t.Errorf("priming events, event ids, comments or notifications lost: %s", got)
	}
	if strings.Contains(got, "id: 42\n") {
		t.Errorf("a list under a case-variant key passed unfiltered: %s", got)
	}
	if strings.Contains(got, "secret-prompt") {
		t.Errorf("a second list in one result passed unfiltered: %s", got)
	}
	h := up.lastHeader()
	if h.Get("Last-Event-Id") != "39" {
		t.Errorf("Last-Event-ID not passed on the session's GET: %v", h)
	}
	if h.Get("Mcp-Name") != "" || h.Get("Mcp-Param-Table") != "" {
		t.Errorf("headers that mirror a body passed on a GET: %v", h)
	}
	if _, ok := f.gw.tasks.lookup("task-R", sess.ref(), f.gw.now()); !ok {
		t.Error("replayed task handle not bound")
	}

	// Without a session, a resumption is refused and not forwarded.
	n := up.requests()
	resp, got = get(map[string]string{"Last-Event-ID": "39"})
	if d := rpcError(t, []byte(got)); resp.StatusCode != http.StatusBadRequest || d.Reason != reason.BadHTTPRequest {
		t.Errorf("GET with Last-Event-ID and no session: %d %s", resp.StatusCode, got)
	} else if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Reason != reason.BadHTTPRequest || ev.Method != "GET" {
		t.Errorf("audit event %+v", ev)
	}
	if up.requests() != n {
		t.Error("a resumption without a session was forwarded")
	}
	// A GET without a session id is served from the caller's stateless
	// stream.
	if resp, got := get(nil); resp.StatusCode != http.StatusOK || strings.Contains(got, "drop_table") {
		t.Errorf("GET without a session id: %d %s", resp.StatusCode, got)
	}
	// Last-Event-ID on a POST is not passed on.
	f.rawPost(ctx, fraud, call(50, "ping", `{}`), map[string]string{"Mcp-Session-Id": sid, "Last-Event-ID": "3"})
	if h := up.lastHeader(); h.Get("Last-Event-Id") != "" {
		t.Errorf("Last-Event-ID passed on a POST: %v", h)
	}
}

// TestTaskTableBoundsWhatEachOwnerHolds: the task table is bounded per
// owner in count, in the bytes of the requests it keeps and in age, the
// oldest going first, without touching another owner's tasks; a task id
// is never handed to a second owner, and a handle seen again changes
// nothing.
func TestTaskTableBoundsWhatEachOwnerHolds(t *testing.T) {
	tt := newTaskTable()
	a := peerRef{id: gatewaytest.ID(t, identity.KindAgent, "a"), incarnation: "1"}
	b := peerRef{id: gatewaytest.ID(t, identity.KindAgent, "b"), incarnation: "1"}
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	small := taskOrigin{tool: "echo", size: 10}
	if !tt.add("b-0", b, small, now) {
		t.Fatal("add b-0")
	}
	for i := range maxTasksPerOwner + 6 {
		if !tt.add(fmt.Sprintf("a-%d", i), a, small, now) {
			t.Fatalf("add a-%d", i)
		}
	}
	for i, want := range map[int]bool{0: false, 5: false, 6: true, maxTasksPerOwner + 5: true} {
		if _, ok := tt.lookup(fmt.Sprintf("a-%d", i), a, now); ok != want {
			t.Errorf("a-%d kept: %v, want %v", i, ok, want)
		}
	}
	if _, ok := tt.lookup("b-0", b, now); !ok {
		t.Error("b's task went with a's")
	}
	if tt.add("b-0", a, small, now) {
		t.Error("b's task id handed to a")
	}
	if !tt.add("b-0", b, taskOrigin{tool: "other"}, now) {
		t.Error("b's own handle seen again refused")
	}
	if o, _ := tt.lookup("b-0", b, now); o.tool != "echo" {
		t.Errorf("a handle seen again replaced the origin: %+v", o)
	}
	if _, ok := tt.lookup("b-0", peerRef{id: b.id, incarnation: "2"}, now); ok {
		t.Error("b's task reached by b's next incarnation")
	}

	// Bytes: two requests of 20 MiB do not fit in 32.
	big := taskOrigin{tool: "echo", size: 20 << 20}
	tt.add("a-big-1", a, big, now)
	tt.add("a-big-2", a, big, now)
	if _, ok := tt.lookup("a-big-1", a, now); ok {
		t.Error("the byte budget let 40 MiB of requests stay")
	}
	if _, ok := tt.lookup("a-big-2", a, now); !ok {
		t.Error("the newest task went")
	}
	if got := tt.bytes[a.owner()]; got > maxTaskBytesPerOwner {
		t.Errorf("a holds %d bytes", got)
	}

	// Age.
	later := now.Add(maxTaskAge + time.Second)
	if _, ok := tt.lookup("b-0", b, later); ok {
		t.Error("an expired task reached")
	}
	tt.add("a-new", a, small, later)
	if len(tt.byOwner[a.owner()]) != 1 || tt.bytes[a.owner()] != small.size {
		t.Errorf("expired tasks kept: %d tasks, %d bytes", len(tt.byOwner[a.owner()]), tt.bytes[a.owner()])
	}
}

// TestGatewayFiltersListsWhateverTheStreamsLineEndings: the SSE standard
// ends lines with CRLF, LF or a lone CR and ignores a byte order mark at
// the start of a stream, and clients read streams so. An upstream that
// writes an event that way cannot hide a list from the filter (before the
// gateway split events as clients do, these passed unfiltered).
func TestGatewayFiltersListsWhateverTheStreamsLineEndings(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"drop_table"}]}}`
	for name, replay := range map[string]string{
		"lone CR":                      "id: 40\revent: message\rdata: " + list + "\r\r",
		"CR inside a line the LF ends": "event: message\rdata: " + list + "\r\n\r\n",
		"byte order mark":              "\xEF\xBB\xBFdata: " + list + "\n\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{upstream: &taskUpstream{getReplay: replay}})
			ctx := testContext(t)
			fraud := f.httpClient(f.fraud)
			sid := f.rawSession(ctx, fraud, "2025-11-25")
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("Mcp-Session-Id", sid)
			resp, err := fraud.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET: %d %v", resp.StatusCode, err)
			}
			if strings.Contains(string(b), "drop_table") || !strings.Contains(string(b), `{"name":"echo"}`) {
				t.Errorf("the list was not filtered: %q", b)
			}
		})
	}
}
