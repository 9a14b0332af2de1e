package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// aggregatePolicyMore is aggregatePolicy with everything's get-env too.
const aggregatePolicyMore = `{
  "grants": [
    {"src": ["agent:bot"], "dst": ["tool:everything"], "tools": ["echo", "get-sum", "get-env"],
     "when": "tool.name != 'echo' || !args.message.contains('forbidden')"},
    {"src": ["agent:bot"], "dst": ["tool:everything"], "prompts": ["simple-prompt"],
     "resources": ["demo://resource/static/document/*", "!demo://resource/static/document/startup.md",
                   "demo://resource/dynamic/text/*", "!demo://resource/dynamic/text/2"]},
    {"src": ["agent:bot"], "dst": ["tool:files"], "tools": ["read_text_file", "list_directory"],
     "when": "tool.name == '' || ((args.path == '%[1]s' || args.path.startsWith('%[1]s/')) && !args.path.matches(r'(^|/)\\.\\.(/|$)'))"},
  ],
}`

// aggregatePolicy lets agent:bot use part of each of two real servers:
// everything's echo (unless the message says "forbidden") and get-sum,
// its simple-prompt, its static documents but startup.md and its dynamic
// text resources but the second, and files' read_text_file and
// list_directory inside %[1]s.
const aggregatePolicy = `{
  "grants": [
    {"src": ["agent:bot"], "dst": ["tool:everything"], "tools": ["echo", "get-sum"],
     "when": "tool.name != 'echo' || !args.message.contains('forbidden')"},
    {"src": ["agent:bot"], "dst": ["tool:everything"], "prompts": ["simple-prompt"],
     "resources": ["demo://resource/static/document/*", "!demo://resource/static/document/startup.md",
                   "demo://resource/dynamic/text/*", "!demo://resource/dynamic/text/2"]},
    {"src": ["agent:bot"], "dst": ["tool:files"], "tools": ["read_text_file", "list_directory"],
     "when": "tool.name == '' || ((args.path == '%[1]s' || args.path.startsWith('%[1]s/')) && !args.path.matches(r'(^|/)\\.\\.(/|$)'))"},
  ],
}`

// TestAggregatedEndpointInFrontOfTwoRealServers: 'agentmesh connect
// --all' in front of server-everything and server-filesystem, each
// behind its own gateway, driven by the TypeScript SDK client over stdio
// and HTTP: one merged, filtered list (SERVICE__TOOL), calls to both, and
// a denial from each gateway, audited by that gateway; everything's
// prompts and resources, filtered by its gateway and served under
// SERVICE__PROMPT and agentmesh://everything/, a prompt got and resources
// read through the mesh (by the aggregated URI, through a template, and
// by the bare URI a resource link gives), and a read its gateway denies;
// then, with the Go SDK's client, list_changed when a policy change adds
// a tool and when one gateway stops.
func TestAggregatedEndpointInFrontOfTwoRealServers(t *testing.T) {
	m := newMesh(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(root, "public")
	const helloText = "hello from the allowed folder"
	if err := os.MkdirAll(allowed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(allowed, "hello.txt"), []byte(helloText), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "secret.txt"), []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	everything := m.join("tool", "everything", "")
	files := m.join("tool", "files", "")
	agent := m.join("agent", "bot", "")
	m.applyPolicy(fmt.Sprintf(aggregatePolicy, allowed))
	m.serve("everything", everything, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")
	filesGW := m.serve("files", files, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-filesystem/dist/index.js"), root)

	p := startServer(t, "connect --all", []string{agentmeshBin, "connect", "--all", "--state", agent, "--listen", "127.0.0.1:0"}, m.env())
	s, err := p.waitServing(startTimeout)
	if err != nil {
		t.Fatalf("connect --all did not start serving: %v", err)
	}
	token := localToken(t, s.TokenFile, agent)

	steps := []step{
		{Op: "listTools"},
		{Op: "callTool", Name: "everything__echo", Arguments: map[string]any{"message": "hello through one endpoint"}},
		{Op: "callTool", Name: "everything__get-sum", Arguments: map[string]any{"a": 2, "b": 40}},
		{Op: "callTool", Name: "files__read_text_file", Arguments: map[string]any{"path": filepath.Join(allowed, "hello.txt")}},
		{Op: "callTool", Name: "everything__echo", Arguments: map[string]any{"message": "forbidden words"}},
		{Op: "callTool", Name: "files__read_text_file", Arguments: map[string]any{"path": filepath.Join(root, "secret.txt")}},
		{Op: "listPrompts"},
		{Op: "getPrompt", Name: "everything__simple-prompt"},
		{Op: "listResources"},
		{Op: "listResourceTemplates"},
		{Op: "readResource", URI: "agentmesh://everything/demo://resource/static/document/architecture.md"},
		{Op: "readResource", URI: "agentmesh://everything/demo://resource/dynamic/text/1"},
		{Op: "readResource", URI: "demo://resource/dynamic/text/3"},
		{Op: "readResource", URI: "agentmesh://everything/demo://resource/dynamic/text/2"},
	}
	want := map[string]bool{"everything__echo": true, "everything__get-sum": true, "files__read_text_file": true, "files__list_directory": true}
	var denials, deniers []string
	for _, tc := range []struct {
		transport string
		spec      clientSpec
	}{
		{"stdio", clientSpec{Transport: "stdio", Command: agentmeshBin, Args: []string{"connect", "--all", "--state", agent}, Steps: steps}},
		{"http", httpClient(s.URL, token, steps...)},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			r := runClient(t, tc.spec).Results
			names := toolNames(t, r[0])
			if len(names) != len(want) {
				t.Errorf("tools/list = %v, want exactly %v", names, want)
			}
			for n := range want {
				if !names[n] {
					t.Errorf("tools/list lacks %q: %v", n, names)
				}
			}
			if got := texts(t, r[1]); !strings.Contains(got, "hello through one endpoint") {
				t.Errorf("everything__echo returned %q", got)
			}
			if got := texts(t, r[2]); !strings.Contains(got, "42") {
				t.Errorf("everything__get-sum returned %q", got)
			}
			if got := texts(t, r[3]); got != helloText {
				t.Errorf("files__read_text_file returned %q, want %q", got, helloText)
			}
			denials = append(denials, policyDenial(t, r[4], "when_false"), policyDenial(t, r[5], "when_false"))
			deniers = append(deniers, "everything", "files")

			var lists struct {
				Prompts []struct {
					Name string `json:"name"`
				} `json:"prompts"`
				Resources []struct {
					URI string `json:"uri"`
				} `json:"resources"`
				ResourceTemplates []struct {
					URITemplate string `json:"uriTemplate"`
				} `json:"resourceTemplates"`
			}
			for _, i := range []int{6, 8, 9} {
				if r[i].Error != nil || json.Unmarshal(r[i].Result, &lists) != nil {
					t.Fatalf("%s: %+v %s", r[i].Op, r[i].Error, r[i].Result)
				}
			}
			if len(lists.Prompts) != 1 || lists.Prompts[0].Name != "everything__simple-prompt" {
				t.Errorf("prompts/list = %+v, want everything__simple-prompt alone (its gateway filters the others)", lists.Prompts)
			}
			if got := texts(t, r[7]); got == "" {
				t.Errorf("everything__simple-prompt returned no text: %s", r[7].Result)
			}
			const doc = "agentmesh://everything/demo://resource/static/document/"
			uris := map[string]bool{}
			for _, res := range lists.Resources {
				uris[res.URI] = true
				if !strings.HasPrefix(res.URI, doc) {
					t.Errorf("resources/list has %s, want only everything's granted documents under %s", res.URI, doc)
				}
			}
			if !uris[doc+"architecture.md"] || uris[doc+"startup.md"] {
				t.Errorf("resources/list = %v, want architecture.md and not startup.md", uris)
			}
			templates := map[string]bool{}
			for _, tpl := range lists.ResourceTemplates {
				templates[tpl.URITemplate] = true
			}
			if !templates["agentmesh://everything/demo://resource/dynamic/text/{resourceId}"] {
				t.Errorf("resources/templates/list = %v, want everything's text template under agentmesh://everything/", templates)
			}
			if got := texts(t, r[10]); !strings.Contains(strings.ToLower(got), "architecture") {
				t.Errorf("reading architecture.md returned %q", got)
			}
			for _, i := range []int{11, 12} {
				var read struct {
					Contents []struct {
						URI string `json:"uri"`
					} `json:"contents"`
				}
				if got := texts(t, r[i]); got == "" || json.Unmarshal(r[i].Result, &read) != nil || len(read.Contents) == 0 ||
					!strings.HasPrefix(read.Contents[0].URI, "agentmesh://everything/demo://resource/dynamic/text/") {
					t.Errorf("reading %s returned %s", tc.spec.Steps[i].URI, r[i].Result)
				}
			}
			denials = append(denials, policyDenial(t, r[13], "not_granted"))
			deniers = append(deniers, "everything")
		})
	}
	if t.Failed() {
		return
	}
	events := m.waitAudit(denials...)
	for i, id := range denials {
		e := findEvent(t, events, id)
		dst := deniers[i]
		if e.Decision != "deny" || !strings.HasSuffix(e.Dst, "/"+dst) || !strings.Contains(e.Src, "/bot") {
			t.Errorf("the denial %s was audited as %+v, want a deny by %s's gateway for bot", id, e, dst)
		}
	}

	// Liveness, with the Go SDK's client (client.mjs runs its steps at
	// once and waits for no notification): a policy change adding a tool,
	// then a gateway stopping, each reach the client as list_changed.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	changed := make(chan struct{}, 16)
	cl := mcp.NewClient(&mcp.Implementation{Name: "bot", Version: "e2e"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cs, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{tr, token}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	waitTools := func(want ...string) {
		t.Helper()
		for {
			res, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tl := range res.Tools {
				got = append(got, tl.Name)
			}
			slices.Sort(got)
			if slices.Equal(got, want) {
				return
			}
			select {
			case <-changed:
			case <-ctx.Done():
				t.Fatalf("tools = %v, want %v (no list_changed brought them)", got, want)
			}
		}
	}
	waitTools("everything__echo", "everything__get-sum", "files__list_directory", "files__read_text_file")
	// The SDK's client asks for its latest version, 2026-07-28, which
	// the HTTP endpoint serves statelessly (list_changed then comes on a
	// subscriptions/listen stream); a client of an earlier version on
	// the same endpoint gets a session. Each calls both services.
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" || cs.ID() != "" {
		t.Errorf("the Go SDK's client negotiated %s with session %q, want 2026-07-28 without one", v, cs.ID())
	}
	old, err := mcp.NewClient(&mcp.Implementation{Name: "bot-old", Version: "e2e"}, nil).Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.URL, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: bearer{tr, token}}}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	if v := old.InitializeResult().ProtocolVersion; v != "2025-11-25" || old.ID() == "" {
		t.Errorf("a 2025-11-25 client negotiated %s with session %q", v, old.ID())
	}
	for _, c := range []*mcp.ClientSession{cs, old} {
		for _, p := range []*mcp.CallToolParams{
			{Name: "files__list_directory", Arguments: map[string]any{"path": allowed}},
			{Name: "everything__get-sum", Arguments: map[string]any{"a": 1, "b": 2}},
		} {
			if res, err := c.CallTool(ctx, p); err != nil || res.IsError {
				t.Errorf("%s (%s): %v, %v", p.Name, c.InitializeResult().ProtocolVersion, res, err)
			}
		}
	}
	old.Close()
	m.applyPolicy(fmt.Sprintf(aggregatePolicyMore, allowed))
	waitTools("everything__echo", "everything__get-env", "everything__get-sum", "files__list_directory", "files__read_text_file")
	filesGW.stop(t)
	waitTools("everything__echo", "everything__get-env", "everything__get-sum")
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "everything__echo", Arguments: map[string]any{"message": "still here"}})
	if err != nil || res.IsError {
		t.Fatalf("everything__echo after files stopped: %v, %v", res, err)
	}
}

// bearer sends the local endpoint's token with every request.
type bearer struct {
	rt    http.RoundTripper
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}
