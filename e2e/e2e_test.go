//go:build unix

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// everythingPolicy lets agent:assistant use a few of server-everything's
// tools, one family of resources and one prompt; everything else on that
// server (get-env, which would print the server's environment, among them)
// stays denied.
const everythingPolicy = `{
  "grants": [
    {
      "src": ["agent:assistant"],
      "dst": ["tool:everything"],
      "tools": ["echo", "get-sum", "trigger-long-running-operation"],
      "resources": ["demo://resource/dynamic/text/*"],
      "prompts": ["simple-prompt"],
    },
  ],
  "tests": [
    {
      "src": "agent:assistant",
      "dst": "tool:everything",
      "allow": ["connect", "tools/call echo", "resources/read demo://resource/dynamic/text/1", "prompts/get simple-prompt"],
      "deny": ["tools/call get-env", "resources/read demo://resource/dynamic/blob/1", "prompts/get args-prompt"],
    },
  ],
}
`

// TestEverythingServerThroughMesh puts the reference "everything" MCP server
// behind a gateway and drives it with the TypeScript SDK client through
// `agentmesh connect`, over stdio and over the connector's HTTP endpoint.
func TestEverythingServerThroughMesh(t *testing.T) {
	m := newMesh(t)
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(everythingPolicy)
	m.serve("everything", tool, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")
	url, token := m.connectHTTP("everything", agent)

	// Another local user's process can reach the port but has no token:
	// the real SDK client is refused before anything reaches the mesh.
	refused := runClientMayFail(t, httpClient(url, "", step{Op: "listTools"}))
	if e := refused.ConnectError; e == nil || e.Code != 401 || !strings.Contains(e.Message, `"reason":"local_auth"`) {
		t.Fatalf("a client without the endpoint's token: %+v, want HTTP 401 with reason local_auth", refused.ConnectError)
	}

	steps := []step{
		{Op: "listTools"},
		{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": "hello through the mesh"}},
		{Op: "callTool", Name: "get-sum", Arguments: map[string]any{"a": 2, "b": 40}},
		{Op: "callTool", Name: "get-env"},
		{Op: "readResource", URI: "demo://resource/dynamic/text/1"},
		{Op: "readResource", URI: "demo://resource/dynamic/blob/1"},
		{Op: "getPrompt", Name: "simple-prompt"},
		{Op: "getPrompt", Name: "args-prompt", Arguments: map[string]any{"city": "Paris"}},
		{Op: "callTool", Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 0.6, "steps": 3}, Progress: true},
	}
	const (
		list = iota
		echo
		sum
		env
		text
		blob
		prompt
		argsPrompt
		long
	)
	var denials []string
	echoed := 0 // echo calls answered, one per transport
	for _, tc := range []struct {
		transport string
		spec      clientSpec
	}{
		{"stdio", stdioClient("everything", agent, steps...)},
		{"http", httpClient(url, token, steps...)},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			out := runClient(t, tc.spec)
			r := out.Results

			names := toolNames(t, r[list])
			for _, n := range []string{"echo", "get-sum", "trigger-long-running-operation"} {
				if !names[n] {
					t.Errorf("tools/list lacks the granted tool %q: %v", n, names)
				}
			}
			for n := range names {
				if n != "echo" && n != "get-sum" && n != "trigger-long-running-operation" {
					t.Errorf("tools/list shows %q, which the policy does not grant", n)
				}
			}

			if got := texts(t, r[echo]); !strings.Contains(got, "hello through the mesh") {
				t.Errorf("echo returned %q", got)
			}
			if got := texts(t, r[sum]); !strings.Contains(got, "42") {
				t.Errorf("get-sum 2+40 returned %q", got)
			}
			denials = append(denials, policyDenial(t, r[env], "not_granted"))
			if p := os.Getenv("PATH"); len(r[env].Result) > 0 && string(r[env].Result) != "null" || p != "" && strings.Contains(out.Raw, p) {
				t.Errorf("the denied get-env call returned a result or leaked the server's environment: %s", r[env].Result)
			}

			if got := texts(t, r[text]); !strings.Contains(got, "Resource 1") {
				t.Errorf("resources/read demo://resource/dynamic/text/1 returned %q", got)
			}
			denials = append(denials, policyDenial(t, r[blob], "not_granted"))
			if got := texts(t, r[prompt]); !strings.Contains(got, "simple prompt") {
				t.Errorf("prompts/get simple-prompt returned %q", got)
			}
			denials = append(denials, policyDenial(t, r[argsPrompt], "not_granted"))

			if got := texts(t, r[long]); !strings.Contains(got, "Long running operation completed") {
				t.Errorf("trigger-long-running-operation returned %q", got)
			}
			// Every progress notification reaches the client before the
			// call's result (the gateway sends them on the call's own
			// stream). The SDK may still drop the last one; see lateProgress.
			if n := r[long].WireProgressBeforeResult; n != 3 {
				t.Fatalf("%d progress notifications reached the client before the result, want 3", n)
			}
			if n := len(r[long].Progress); n < 2 {
				t.Fatalf("the SDK delivered %d progress notifications, want 3 (2 when it drops the last; see lateProgress)", n)
			}
			for i, p := range r[long].Progress {
				if p.Progress != float64(i+1) || p.Total != 3 {
					t.Errorf("progress notification %d is %v/%v, want %d/3", i, p.Progress, p.Total, i+1)
				}
			}
			echoed++
		})
	}
	if t.Failed() {
		return
	}

	events := m.waitAudit(denials...)
	wantDeny := []struct{ method, what string }{
		{"tools/call", "get-env"}, {"resources/read", "demo://resource/dynamic/blob/1"}, {"prompts/get", "args-prompt"},
	}
	for i, id := range denials {
		e := findEvent(t, events, id)
		w := wantDeny[i%len(wantDeny)]
		if e.Decision != "deny" || e.Reason != "not_granted" || e.Method != w.method || e.Tool+e.Resource+e.Prompt != w.what ||
			!strings.HasSuffix(e.Src, "/agent/assistant") || !strings.HasSuffix(e.Dst, "/tool/everything") {
			t.Errorf("audit event %s is %+v, want a not_granted deny of %s %s by agent assistant at tool everything", id, e, w.method, w.what)
		}
	}
	// One allowed echo per transport, each recorded as an allow decision.
	allowed := 0
	for _, e := range events {
		if e.Method == "tools/call" && e.Tool == "echo" && e.Decision == "allow" && e.Reason == "allowed" {
			allowed++
		}
	}
	if allowed != echoed {
		t.Errorf("the audit trail has %d allow decisions for echo, want %d", allowed, echoed)
	}
	m.verifyAudit()
}

// resourcesPolicy grants agent:assistant server-everything's resources
// except one document.
const resourcesPolicy = `{
  "grants": [
    {"src": ["agent:assistant"], "dst": ["tool:everything"],
     "resources": ["demo://resource/*", "!demo://resource/static/document/startup.md"]},
  ],
}`

// TestEverythingServerResourcesKeepTheirCanonicalNames lists and reads the
// resources the reference everything server offers through the mesh: every
// URI and template it lists is already canonical, so the gateway shows them
// all but the excluded document, and reads them; other spellings of the
// excluded document are refused.
func TestEverythingServerResourcesKeepTheirCanonicalNames(t *testing.T) {
	m := newMesh(t)
	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(resourcesPolicy)
	m.serve("everything", tool, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio")
	out := runClient(t, stdioClient("everything", agent,
		step{Op: "listResources"},
		step{Op: "listResourceTemplates"},
		step{Op: "readResource", URI: "demo://resource/static/document/architecture.md"},
		step{Op: "readResource", URI: "demo://resource/static/document/STARTUP.md"},
		step{Op: "readResource", URI: "demo://resource/static/document/./startup.md"},
		step{Op: "readResource", URI: "demo://resource/static//document/startup.md"},
	))
	r := out.Results
	var listed struct {
		Resources []struct {
			URI string `json:"uri"`
		} `json:"resources"`
		ResourceTemplates []struct {
			URITemplate string `json:"uriTemplate"`
		} `json:"resourceTemplates"`
	}
	for _, i := range []int{0, 1} {
		if r[i].Error != nil || json.Unmarshal(r[i].Result, &listed) != nil {
			t.Fatalf("%s: %+v %s", r[i].Op, r[i].Error, r[i].Result)
		}
	}
	uris := map[string]bool{}
	for _, res := range listed.Resources {
		uris[res.URI] = true
	}
	for _, want := range []string{"architecture.md", "features.md", "how-it-works.md", "structure.md"} {
		if !uris["demo://resource/static/document/"+want] {
			t.Errorf("resources/list lacks the granted document %s: %v", want, uris)
		}
	}
	if uris["demo://resource/static/document/startup.md"] {
		t.Errorf("resources/list shows the excluded document")
	}
	templates := map[string]bool{}
	for _, tpl := range listed.ResourceTemplates {
		templates[tpl.URITemplate] = true
	}
	if !templates["demo://resource/dynamic/text/{resourceId}"] {
		t.Errorf("resources/templates/list lacks the text template: %v", templates)
	}
	if got := texts(t, r[2]); !strings.Contains(strings.ToLower(got), "architecture") {
		t.Errorf("reading architecture.md returned %q", got)
	}
	policyDenial(t, r[3], "not_granted")
	policyDenial(t, r[4], "noncanonical_uri")
	policyDenial(t, r[5], "noncanonical_uri")
}

// filesPolicy confines agent:reader to the folder ALLOWED of the filesystem
// server: the read tools only, and only on paths inside ALLOWED without a
// ".." segment. The when holds for messages without a tool (initialize,
// tools/list have tool.name == ""); the tools globs still filter the list.
const filesPolicy = `{
  "grants": [
    {
      "src": ["agent:reader"],
      "dst": ["tool:files"],
      "tools": ["read_text_file", "read_file", "list_directory"],
      "when": "tool.name == '' || ((args.path == '%[1]s' || args.path.startsWith('%[1]s/')) && !args.path.matches(r'(^|/)\\.\\.(/|$)'))",
    },
  ],
  "tests": [
    {
      "src": "agent:reader",
      "dst": "tool:files",
      "args": {"path": "%[1]s/hello.txt"},
      "allow": ["tools/call read_text_file"],
      "deny": ["tools/call write_file"],
    },
    {
      "src": "agent:reader",
      "dst": "tool:files",
      "args": {"path": "%[1]s/../secret.txt"},
      "deny": ["tools/call read_text_file"],
    },
  ],
}
`

// TestFilesystemWhenConfinesPathsAtGateway puts the reference filesystem MCP
// server, rooted at a directory holding an allowed folder, another folder
// and a secret file, behind a gateway whose grant only allows paths inside
// the allowed folder. The server itself would serve all three; the gateway
// must refuse the other two before they reach it.
func TestFilesystemWhenConfinesPathsAtGateway(t *testing.T) {
	m := newMesh(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(root, "public")
	other := filepath.Join(root, "private")
	const (
		helloText  = "hello from the allowed folder"
		otherText  = "OTHER-FOLDER-CONTENT-7d1f"
		secretText = "SECRET-CONTENT-93ab"
	)
	for path, text := range map[string]string{
		filepath.Join(allowed, "hello.txt"): helloText,
		filepath.Join(other, "other.txt"):   otherText,
		filepath.Join(root, "secret.txt"):   secretText,
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	tool := m.join("tool", "files", "tag:files")
	agent := m.join("agent", "reader", "tag:readers")
	m.applyPolicy(fmt.Sprintf(filesPolicy, allowed))
	gw := m.serve("files", tool, "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-filesystem/dist/index.js"), root)

	out := runClient(t, stdioClient("files", agent,
		step{Op: "listTools"},
		step{Op: "callTool", Name: "read_text_file", Arguments: map[string]any{"path": filepath.Join(allowed, "hello.txt")}},
		step{Op: "callTool", Name: "list_directory", Arguments: map[string]any{"path": allowed}},
		step{Op: "callTool", Name: "read_text_file", Arguments: map[string]any{"path": filepath.Join(other, "other.txt")}},
		step{Op: "callTool", Name: "read_text_file", Arguments: map[string]any{"path": allowed + "/../secret.txt"}},
		step{Op: "callTool", Name: "read_file", Arguments: map[string]any{"path": allowed + "/../secret.txt"}},
		step{Op: "callTool", Name: "write_file", Arguments: map[string]any{"path": filepath.Join(allowed, "new.txt"), "content": "x"}},
	))
	r := out.Results

	names := toolNames(t, r[0])
	for _, n := range []string{"read_text_file", "read_file", "list_directory"} {
		if !names[n] {
			t.Errorf("tools/list lacks the granted tool %q: %v", n, names)
		}
	}
	for _, n := range []string{"write_file", "edit_file", "move_file", "read_multiple_files", "directory_tree"} {
		if names[n] {
			t.Errorf("tools/list shows %q, which the policy does not grant", n)
		}
	}
	if got := texts(t, r[1]); got != helloText {
		t.Errorf("read_text_file inside the allowed folder returned %q, want %q", got, helloText)
	}
	if got := texts(t, r[2]); !strings.Contains(got, "hello.txt") {
		t.Errorf("list_directory of the allowed folder returned %q", got)
	}

	var whenDenials []string
	for _, i := range []int{3, 4, 5} {
		whenDenials = append(whenDenials, policyDenial(t, r[i], "when_false"))
	}
	grantDenial := policyDenial(t, r[6], "not_granted")
	if _, err := os.Stat(filepath.Join(allowed, "new.txt")); !os.IsNotExist(err) {
		t.Errorf("the denied write_file created a file (stat: %v)", err)
	}
	// Never reached: the server would return these files if asked (they
	// are under its root), yet their content appears nowhere in what the
	// client or the gateway printed; the audit trail below shows why.
	for _, s := range []string{out.Raw, gw.stdout.String(), gw.stderr.String()} {
		if strings.Contains(s, secretText) || strings.Contains(s, otherText) {
			t.Errorf("content outside the allowed folder left the server:\n%s", s)
		}
	}
	if t.Failed() {
		return
	}

	events := m.waitAudit(append(whenDenials, grantDenial)...)
	for i, id := range whenDenials {
		e := findEvent(t, events, id)
		wantTool := []string{"read_text_file", "read_text_file", "read_file"}[i]
		if e.Decision != "deny" || e.Reason != "when_false" || e.Method != "tools/call" || e.Tool != wantTool ||
			!strings.HasSuffix(e.Src, "/agent/reader") || !strings.HasSuffix(e.Dst, "/tool/files") {
			t.Errorf("audit event %s is %+v, want a when_false deny of %s by agent reader at tool files", id, e, wantTool)
		}
	}
	if e := findEvent(t, events, grantDenial); e.Decision != "deny" || e.Tool != "write_file" {
		t.Errorf("audit event %s is %+v, want the deny of write_file", grantDenial, e)
	}
	// Exactly the two calls inside the folder were allowed: the denied ones
	// were decided once, at the gateway, and never forwarded.
	var allowedCalls []string
	for _, e := range events {
		if e.Method == "tools/call" && e.Decision == "allow" {
			allowedCalls = append(allowedCalls, e.Tool)
		}
	}
	if strings.Join(allowedCalls, ",") != "list_directory,read_text_file" && strings.Join(allowedCalls, ",") != "read_text_file,list_directory" {
		t.Errorf("allowed tools/call decisions in the audit trail: %v, want read_text_file and list_directory", allowedCalls)
	}
	m.verifyAudit()
}
