package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/tailscale/hujson"
)

// SetToolPins returns doc, a policy document, with the tool_pins entry of
// server given the pins in pins (tool name to hash, added or replaced;
// other pins of the server are kept) and, when mode is not "", that pin
// mode. The rest of the document, comments included, is left as it was,
// and the result is compiled: an edit that would make the document
// invalid (a server no grant names, a malformed hash) is an error. This
// is what 'agentmesh tools pin' and 'tools approve' write.
func SetToolPins(doc []byte, server identity.Name, mode string, pins map[string]string) ([]byte, error) {
	v, err := hujson.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("set tool pins: %w", err)
	}
	std := v.Clone()
	std.Standardize()
	var cur struct {
		ToolPins map[string]struct {
			Pin   *string         `json:"pin"`
			Tools json.RawMessage `json:"tools"`
		} `json:"tool_pins"`
	}
	if err := json.Unmarshal(std.Pack(), &cur); err != nil {
		return nil, fmt.Errorf("set tool pins: %w", err)
	}
	key := "tool:" + string(server)
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	base := "/tool_pins/" + pointer(key)
	entry, has := cur.ToolPins[key]
	switch {
	case cur.ToolPins == nil:
		ops = append(ops, op{"add", "/tool_pins", map[string]any{}})
		fallthrough
	case !has:
		ops = append(ops, op{"add", base, map[string]any{}})
		fallthrough
	case entry.Tools == nil:
		ops = append(ops, op{"add", base + "/tools", map[string]any{}})
	}
	if mode != "" {
		ops = append(ops, op{"add", base + "/pin", mode})
	}
	for _, tool := range slices.Sorted(maps.Keys(pins)) {
		ops = append(ops, op{"add", base + "/tools/" + pointer(tool), pins[tool]})
	}
	patch, _ := json.Marshal(ops)
	if err := v.Patch(patch); err != nil {
		return nil, fmt.Errorf("set tool pins: %w", err)
	}
	out := v.Pack()
	if _, err := Compile(out, "edit"); err != nil {
		return nil, err
	}
	return out, nil
}

// pointer escapes s as one JSON Pointer (RFC 6901) token.
func pointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
