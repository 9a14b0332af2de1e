package policy

import (
	"strings"
	"testing"
)

func TestSetToolPinsKeepsCommentsAndCompiles(t *testing.T) {
	doc := `{
  // who may use the file server
  "grants": [{"src": ["*"], "dst": ["tool:files"], "tools": ["*"]}],
}`
	out, err := SetToolPins([]byte(doc), "files", PinEnforce, map[string]string{"read": hashA, "a/b": hashB})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "// who may use the file server") {
		t.Fatalf("comment lost:\n%s", out)
	}
	p, err := Compile(out, "1")
	if err != nil {
		t.Fatal(err)
	}
	if sp := p.ToolPins("files"); sp.Mode != PinEnforce || sp.Tools["read"] != hashA || sp.Tools["a/b"] != hashB {
		t.Fatalf("pins %+v", sp)
	}
	// Approving one change replaces that pin and keeps the others.
	out, err = SetToolPins(out, "files", "", map[string]string{"read": hashB})
	if err != nil {
		t.Fatal(err)
	}
	p, _ = Compile(out, "2")
	if sp := p.ToolPins("files"); sp.Mode != PinEnforce || sp.Tools["read"] != hashB || sp.Tools["a/b"] != hashB {
		t.Fatalf("pins after approve %+v", sp)
	}
	if _, err := SetToolPins([]byte(doc), "nobody", "", map[string]string{"x": hashA}); err == nil || !strings.Contains(err.Error(), "unknown server") {
		t.Fatalf("pins for an unknown server: %v", err)
	}
}
