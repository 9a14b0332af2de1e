// Package toolpin names an MCP tool's definition by a hash, so that a
// reviewed definition can be pinned in the policy and a changed one
// noticed wherever it is seen.
//
// # The hash
//
// A tool's definition is the members name, title, description,
// inputSchema, outputSchema and annotations of its entry in a tools/list
// result (members absent from the entry are absent from the definition;
// any other member, such as _meta or icons, is not part of it). Its hash
// is "sha256:" followed by the lower-case hex SHA-256 of the definition's
// canonical JSON (Canonical: RFC 8785's rules, written here): the same
// definition hashes the same whatever its key order, whitespace, string
// escapes or number spelling. An entry larger than MaxDefinitionBytes is
// not hashed (ErrTooLarge), and a list naming one tool twice is refused
// as a whole (ErrDuplicate): a gateway cannot tell which of the two a
// call would reach.
//
// # Threat model
//
// The definitions come from an MCP server, which may change them at any
// time to steer the model (a poisoned description, a widened schema, a
// harmless tool renamed over a dangerous one). Everything here reads
// them as hostile input: bounded in size and depth, decoded strictly
// (duplicate keys, invalid UTF-8 and unpaired surrogates are refused), and
// the diffs made for people are bounded and carry no argument value (a
// definition holds none).
package toolpin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// MaxDefinitionBytes bounds one tool's entry in a tools/list result.
const MaxDefinitionBytes = 256 << 10

// MaxTools bounds the tools one list may hold to be read here.
const MaxTools = 10_000

// Errors callers tell apart.
var (
	// ErrTooLarge: a tool's entry is larger than MaxDefinitionBytes.
	ErrTooLarge = errors.New("tool definition too large to hash")
	// ErrDuplicate: a list names one tool twice.
	ErrDuplicate = errors.New("two tools with one name")
	// ErrMalformed: a list or entry is not what MCP says it is.
	ErrMalformed = errors.New("malformed tool list")
)

// Fields are the members of a tool entry that make its definition, in
// the order they are shown to people.
var Fields = []string{"name", "title", "description", "inputSchema", "outputSchema", "annotations"}

// Definition is one tool's definition as a server sent it.
type Definition struct {
	Name string
	// Hash is "sha256:<hex>" of Canonical.
	Hash string
	// Canonical is the canonical JSON of the definition's members.
	Canonical []byte
}

// hashPattern is the form of a hash.
var hashPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidHash reports whether s has the form of a hash: "sha256:" and 64
// lower-case hex digits.
func ValidHash(s string) bool { return hashPattern.MatchString(s) }

// Parse reads one tool entry (a JSON object) into its definition.
func Parse(entry []byte) (Definition, error) {
	if len(entry) > MaxDefinitionBytes {
		return Definition{}, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, len(entry), MaxDefinitionBytes)
	}
	canon, err := Canonical(entry)
	if err != nil {
		return Definition{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(canon, &members); err != nil {
		return Definition{}, fmt.Errorf("%w: a tool is not an object", ErrMalformed)
	}
	var name string
	if json.Unmarshal(members["name"], &name) != nil || name == "" {
		return Definition{}, fmt.Errorf("%w: a tool without a name", ErrMalformed)
	}
	def := make(map[string]json.RawMessage, len(Fields))
	for _, f := range Fields {
		if v, ok := members[f]; ok {
			def[f] = v
		}
	}
	raw, _ := json.Marshal(def)
	canon, err = Canonical(raw)
	if err != nil {
		return Definition{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	sum := sha256.Sum256(canon)
	return Definition{Name: name, Hash: "sha256:" + hex.EncodeToString(sum[:]), Canonical: canon}, nil
}

// ParseList reads the tools of a tools/list result ({"tools": [...]}),
// or of a whole JSON-RPC response holding one, in the order sent. A
// duplicate name, or any entry that cannot be read or hashed, refuses the
// whole list.
func ParseList(b []byte) ([]Definition, error) {
	var r struct {
		Tools  *[]json.RawMessage `json:"tools"`
		Result *struct {
			Tools *[]json.RawMessage `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	tools := r.Tools
	if tools == nil && r.Result != nil {
		tools = r.Result.Tools
	}
	if tools == nil {
		return nil, fmt.Errorf("%w: no tools array", ErrMalformed)
	}
	if len(*tools) > MaxTools {
		return nil, fmt.Errorf("%w: more than %d tools", ErrMalformed, MaxTools)
	}
	out := make([]Definition, 0, len(*tools))
	seen := make(map[string]bool, len(*tools))
	for _, entry := range *tools {
		d, err := Parse(entry)
		if err != nil {
			return nil, err
		}
		if seen[d.Name] {
			return nil, fmt.Errorf("%w: %q", ErrDuplicate, d.Name)
		}
		seen[d.Name] = true
		out = append(out, d)
	}
	return out, nil
}

// Member returns the canonical JSON of one member of the definition, or
// nil when it is absent.
func (d Definition) Member(name string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(d.Canonical, &m) != nil {
		return nil
	}
	return m[name]
}

// MaxDiffBytes bounds the text Diff returns.
const MaxDiffBytes = 4096

// Diff is a readable, line-based diff from old to new, member by member
// (description as text, schemas and annotations as indented JSON), at
// most MaxDiffBytes long. An old definition with no Canonical (only its
// hash is known) shows the new members whole.
func Diff(old, new Definition) string {
	var b strings.Builder
	for _, f := range Fields {
		o, n := memberLines(old, f), memberLines(new, f)
		if slices.Equal(o, n) {
			continue
		}
		fmt.Fprintf(&b, "@@ %s\n", f)
		for _, l := range lineDiff(o, n) {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	s := b.String()
	if len(s) > MaxDiffBytes {
		cut := MaxDiffBytes
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		s = s[:cut] + "\n... (diff truncated)\n"
	}
	return s
}

func memberLines(d Definition, f string) []string {
	if d.Canonical == nil {
		return nil
	}
	v := d.Member(f)
	if v == nil {
		return nil
	}
	var s string
	if f == "description" || f == "title" || f == "name" {
		if json.Unmarshal(v, &s) == nil {
			return strings.Split(s, "\n")
		}
	}
	var buf bytes.Buffer
	if json.Indent(&buf, v, "", "  ") != nil {
		return []string{string(v)}
	}
	return strings.Split(buf.String(), "\n")
}

// maxDiffLines bounds the lines lineDiff aligns (its table is
// quadratic); longer texts are shown as all removed, then all added.
const maxDiffLines = 400

// lineDiff returns old and new as "  ", "- " and "+ " lines, aligned by
// their longest common subsequence.
func lineDiff(old, new []string) []string {
	var out []string
	if len(old) > maxDiffLines || len(new) > maxDiffLines {
		for _, l := range old {
			out = append(out, "- "+l)
		}
		for _, l := range new {
			out = append(out, "+ "+l)
		}
		return out
	}
	// lcs[i][j]: the longest common subsequence of old[i:] and new[j:].
	lcs := make([][]int, len(old)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(new)+1)
	}
	for i := len(old) - 1; i >= 0; i-- {
		for j := len(new) - 1; j >= 0; j-- {
			if old[i] == new[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		switch {
		case i < len(old) && j < len(new) && old[i] == new[j]:
			out = append(out, "  "+old[i])
			i++
			j++
		case j < len(new) && (i == len(old) || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+ "+new[j])
			j++
		default:
			out = append(out, "- "+old[i])
			i++
		}
	}
	return out
}
