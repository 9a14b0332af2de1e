package mcpwire

import "fmt"

// MetaString returns params._meta[key] when it is a JSON string (the trace
// context keys of MCP 2026-07-28, for one), or "" when params, _meta or
// the key is absent or the value is not a string. A key that differs from
// "_meta" or from key only in case is ErrCaseVariantKey.
func (m *Message) MetaString(key string) (string, error) {
	meta, err := m.paramsMeta()
	if err != nil {
		return "", err
	}
	v, err := member(meta, key)
	if err != nil {
		return "", fmt.Errorf("_meta: %w", err)
	}
	if len(v) == 0 || v[0] != '"' {
		return "", nil
	}
	return string(stringBytes(nil, v)), nil
}
