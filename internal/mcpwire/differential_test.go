package mcpwire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// stdView is what encoding/json reads from a message: once through structs
// (case-insensitive field matching, as a Go MCP server binds params) and
// once through a generic map (case-sensitive, as JavaScript and Python
// see it).
type stdView struct {
	Method     string
	Name       string
	HasName    bool
	Arguments  map[string]any
	MapMethod  any
	MapName    any
	MapArgs    any
	MapHasArgs bool
}

func stdDecode(raw []byte) (stdView, error) {
	var v stdView
	var env struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		return v, err
	}
	v.Method = env.Method
	if len(env.Params) > 0 && env.Params[0] == '{' {
		var p struct {
			Name      *string        `json:"name"`
			Arguments map[string]any `json:"arguments"`
		}
		dec := json.NewDecoder(bytes.NewReader(env.Params))
		dec.UseNumber()
		if err := dec.Decode(&p); err == nil {
			if p.Name != nil {
				v.Name, v.HasName = *p.Name, true
			}
			v.Arguments = p.Arguments
		}
	}
	var generic map[string]any
	dec = json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return v, err
	}
	v.MapMethod = generic["method"]
	if p, ok := generic["params"].(map[string]any); ok {
		v.MapName = p["name"]
		v.MapArgs, v.MapHasArgs = p["arguments"]
	}
	return v, nil
}

// checkAgainstStd fails t if encoding/json rejects a message Decode
// accepted, or reads a different method, tool name or arguments.
func checkAgainstStd(t testing.TB, m *Message) {
	t.Helper()
	v, err := stdDecode(m.Raw)
	if err != nil {
		t.Fatalf("encoding/json rejects accepted message %q: %v", m.Raw, err)
	}
	if v.Method != m.Method || (m.Method != "" && v.MapMethod != m.Method) {
		t.Fatalf("method: ours %q, encoding/json struct %q, map %v (input %q)", m.Method, v.Method, v.MapMethod, m.Raw)
	}
	if m.Method != "tools/call" {
		return
	}
	tc, err := m.ToolCall()
	if err != nil {
		return
	}
	if !v.HasName || v.Name != tc.Name || v.MapName != tc.Name {
		t.Fatalf("tool name: ours %q, encoding/json struct %q (present %v), map %v (input %q)", tc.Name, v.Name, v.HasName, v.MapName, m.Raw)
	}
	if !reflect.DeepEqual(v.Arguments, tc.Arguments) {
		t.Fatalf("arguments: ours %#v, encoding/json %#v (input %q)", tc.Arguments, v.Arguments, m.Raw)
	}
	if tc.Arguments != nil && !reflect.DeepEqual(v.MapArgs, any(tc.Arguments)) {
		t.Fatalf("arguments: ours %#v, encoding/json map %#v (input %q)", tc.Arguments, v.MapArgs, m.Raw)
	}
}

// gen writes random but valid JSON-RPC messages, spelling strings with
// random escapes and spacing.
type gen struct{ r *rand.Rand }

var genNames = []string{"tools/call", "query", "drop_table", "list_tables", "name", "sql", "kind", "Kelvin", "straße", "café", "😀", "a/b", `q"uote`, `back\slash`, "tab\there", "σς", "\u212a", "\u017f"}

func (g gen) ws() string {
	return []string{"", "", " ", "\n", "\t ", "\r\n  "}[g.r.IntN(6)]
}

// str encodes s as a JSON string, escaping each rune in one of the ways
// every parser decodes identically.
func (g gen) str(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		must := r == '"' || r == '\\' || r < 0x20
		switch c := g.r.IntN(6); {
		case c == 0 || (must && c < 3):
			if r > 0xFFFF {
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04x\u%04X`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		case c == 1 && r == '/':
			b.WriteString(`\/`)
		case must:
			switch r {
			case '"', '\\':
				b.WriteByte('\\')
				b.WriteRune(r)
			case '\n':
				b.WriteString(`\n`)
			case '\t':
				b.WriteString(`\t`)
			default:
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (g gen) value(depth int) string {
	switch k := g.r.IntN(8); {
	case depth > 3 || k < 2:
		return g.str(genNames[g.r.IntN(len(genNames))])
	case k == 2:
		return []string{"0", "-1", "3.25", "1e3", "-0.5E-2", "12345678901234567890"}[g.r.IntN(6)]
	case k == 3:
		return []string{"true", "false", "null"}[g.r.IntN(3)]
	case k == 4:
		n := g.r.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = g.ws() + g.value(depth+1) + g.ws()
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		return g.object(depth + 1)
	}
}

// object writes an object whose keys are distinct under case folding.
func (g gen) object(depth int) string {
	n := g.r.IntN(5)
	seen := map[string]bool{}
	var parts []string
	for range n {
		k := genNames[g.r.IntN(len(genNames))]
		if hasControl([]byte(k)) {
			continue // Decode rejects control characters in keys
		}
		f := string(appendFold(nil, []byte(k)))
		if seen[f] {
			continue
		}
		seen[f] = true
		parts = append(parts, g.ws()+g.str(k)+g.ws()+":"+g.ws()+g.value(depth)+g.ws())
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func (g gen) message() string {
	members := []string{
		g.str("jsonrpc") + ":" + g.str("2.0"),
		g.str("id") + ":" + []string{"1", `"x"`, "-42", g.str("req-1")}[g.r.IntN(4)],
		g.str("method") + ":" + g.str([]string{"tools/call", "tools/call", "tools/list", "prompts/get", "vendor/x"}[g.r.IntN(5)]),
	}
	params := []string{g.str("name") + ":" + g.str(genNames[g.r.IntN(len(genNames))])}
	if g.r.IntN(3) > 0 {
		params = append(params, g.str("arguments")+":"+g.ws()+g.object(2))
	}
	if g.r.IntN(3) == 0 {
		params = append(params, g.str("_meta")+":"+`{"progressToken":1}`)
	}
	g.r.Shuffle(len(params), func(i, j int) { params[i], params[j] = params[j], params[i] })
	members = append(members, g.str("params")+":"+g.ws()+"{"+strings.Join(params, ","+g.ws())+"}")
	g.r.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	return g.ws() + "{" + g.ws() + strings.Join(members, g.ws()+","+g.ws()) + g.ws() + "}" + g.ws()
}

func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	for i := range 5000 {
		in := g.message()
		msgs, _, err := Decode([]byte(in), Limits{})
		if err != nil {
			t.Fatalf("input %d %q: Decode: %v", i, in, err)
		}
		if !utf8.ValidString(in) {
			t.Fatalf("generator wrote invalid UTF-8: %q", in)
		}
		checkAgainstStd(t, &msgs[0])
		if msgs[0].Method == "tools/call" {
			// ToolCall fails only for names with control characters.
			v, _ := stdDecode(msgs[0].Raw)
			_, err := msgs[0].ToolCall()
			if wantErr := hasControl([]byte(v.Name)); (err != nil) != wantErr {
				t.Fatalf("input %q: ToolCall error %v, want error: %v", in, err, wantErr)
			}
		}
	}
}
