package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

var (
	hashA = "sha256:" + strings.Repeat("a", 64)
	hashB = "sha256:" + strings.Repeat("b", 64)
)

const pinnedDoc = `{
  "groups": {"group:servers": ["tool:files"]},
  "grants": [{"src": ["agent:bot"], "dst": ["group:servers"], "tools": ["*"]}],
  "tool_pins": {
    "tool:files": {
      "pin": "enforce",
      "tools": {"read_file": "` + "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `"},
    },
  },
}`

func TestToolPinsCompileAndCheck(t *testing.T) {
	p, err := Compile([]byte(pinnedDoc), "1")
	if err != nil {
		t.Fatal(err)
	}
	sp := p.ToolPins("files")
	for _, c := range []struct {
		tool, hash string
		want       PinStatus
	}{
		{"read_file", hashA, Pinned},
		{"read_file", hashB, Changed},
		{"read_file", "", Changed},
		{"write_file", hashA, Changed}, // unpinned under enforce
	} {
		if got := sp.CheckTool(c.tool, c.hash); got != c.want {
			t.Errorf("CheckTool(%s, %s) = %s, want %s", c.tool, c.hash, got, c.want)
		}
	}
	if got := p.ToolPins("other"); got.Mode != PinWarn || got.CheckTool("x", hashA) != Unpinned {
		t.Errorf("a server with no entry: %+v", got)
	}
	off := ServerPins{Mode: PinOff}
	if off.CheckTool("x", "") != Unchecked || !Unchecked.Allows() || Changed.Allows() {
		t.Error("off mode")
	}
}

func TestToolPinsValidationNamesTheLine(t *testing.T) {
	for _, c := range []struct {
		name, doc, want string
		line            int
	}{
		{"malformed hash", `{"grants": [{"src": ["*"], "dst": ["tool:files"]}],
"tool_pins": {"tool:files": {"tools": {
  "read_file": "sha256:ABC"}}}}`, "malformed hash", 3},
		{"unknown server", `{"grants": [{"src": ["*"], "dst": ["tool:files"]}],
"tool_pins": {
  "tool:fils": {"tools": {}}}}`, "unknown server", 3},
		{"server by tag only", `{"grants": [{"src": ["*"], "dst": ["tag:prod"]}],
"tool_pins": {
  "tool:files": {}}}`, "unknown server", 3},
		{"not a tool", `{"grants": [{"src": ["*"], "dst": ["tool:files"]}],
"tool_pins": {
  "agent:files": {}}}`, "tool:NAME", 3},
		{"unknown mode", `{"grants": [{"src": ["*"], "dst": ["tool:files"]}],
"tool_pins": {"tool:files": {
  "pin": "block"}}}`, "unknown pin mode", 3},
		{"unknown field", `{"grants": [{"src": ["*"], "dst": ["tool:files"]}],
"tool_pins": {"tool:files": {
  "pins": {}}}}`, "pins", 3},
	} {
		_, err := Compile([]byte(c.doc), "1")
		var pe *Error
		if !errors.As(err, &pe) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) || pe.Line != c.line {
			t.Errorf("%s: %v, want %q at line %d", c.name, err, c.want, c.line)
		}
	}
}

func TestPolicyTestsCheckPins(t *testing.T) {
	base := strings.TrimRight(strings.TrimSuffix(pinnedDoc, "}"), ",\n ") + `, "tests": [%s]}`
	ok := `{"src": "agent:bot", "dst": "tool:files", "tool_hashes": {"read_file": "` + hashA + `"}, "allow": ["tools/call read_file"]}`
	if _, err := Compile([]byte(strings.Replace(base, "%s", ok, 1)), "1"); err != nil {
		t.Fatalf("a pinned definition: %v", err)
	}
	changed := `{"src": "agent:bot", "dst": "tool:files", "tool_hashes": {"read_file": "` + hashB + `"}, "deny": ["tools/call read_file", "tools/call write_file"]}`
	if _, err := Compile([]byte(strings.Replace(base, "%s", changed, 1)), "1"); err != nil {
		t.Fatalf("a changed definition must be refused: %v", err)
	}
	wrong := `{"src": "agent:bot", "dst": "tool:files", "tool_hashes": {"read_file": "` + hashB + `"}, "allow": ["tools/call read_file"]}`
	_, err := Compile([]byte(strings.Replace(base, "%s", wrong, 1)), "1")
	if !errors.Is(err, ErrTestFailed) || !strings.Contains(err.Error(), string(reason.ToolChanged)) {
		t.Fatalf("want a failed test naming tool_changed, got %v", err)
	}
	// Without tool_hashes a test decides as before: the policy alone.
	plain := `{"src": "agent:bot", "dst": "tool:files", "allow": ["tools/call read_file"]}`
	if _, err := Compile([]byte(strings.Replace(base, "%s", plain, 1)), "1"); err != nil {
		t.Fatal(err)
	}
}

func TestProjectionCarriesOnlyItsOwnPins(t *testing.T) {
	doc := `{"grants": [{"src": ["*"], "dst": ["tool:files", "tool:db"]}],
	"tool_pins": {"tool:files": {"pin": "enforce", "tools": {"a": "` + hashA + `"}}, "tool:db": {"pin": "off"}}}`
	p, err := Compile([]byte(doc), "1")
	if err != nil {
		t.Fatal(err)
	}
	pr, err := p.Project(Node{Kind: identity.KindTool, Name: "files"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(pr.Document), "tool:db") {
		t.Fatalf("projection names another server's pins: %s", pr.Document)
	}
	gp, err := CompileProjection(pr, "1")
	if err != nil {
		t.Fatal(err)
	}
	if sp := gp.ToolPins("files"); sp.Mode != PinEnforce || sp.Tools["a"] != hashA {
		t.Fatalf("projected pins %+v", sp)
	}
}
