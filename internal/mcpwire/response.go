package mcpwire

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Validate checks that b is exactly one JSON value that follows every
// byte-level rule of Decode (size, depth, grammar, UTF-8, no duplicate or
// case-variant keys at any depth), without the JSON-RPC envelope rules.
func Validate(b []byte, lim Limits) error {
	lim = lim.withDefaults()
	if len(b) > lim.MaxBytes {
		return fmt.Errorf("validate: %w: %d bytes, limit %d", ErrTooLarge, len(b), lim.MaxBytes)
	}
	s := getScanner(b, lim.MaxDepth, true)
	defer putScanner(s)
	if err := s.validate(); err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	return nil
}

// ErrorResponse builds the bytes of a JSON-RPC error response for id. An
// id that is not a JSON string or a safe integer (see Decode), including a
// nil id, is written as null; e.Data is included only when it is strictly
// valid JSON (see Validate). e.Message is escaped, invalid UTF-8 in it
// becoming U+FFFD.
func ErrorResponse(id json.RawMessage, e Error) []byte {
	b := make([]byte, 0, 64+len(id)+len(e.Message)+len(e.Data))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, canonicalID(id)...)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = append(b, `,"message":`...)
	b = appendQuoted(b, e.Message)
	if len(e.Data) > 0 && Validate(e.Data, Limits{MaxBytes: len(e.Data)}) == nil {
		start := skipWS(e.Data, 0)
		b = append(b, `,"data":`...)
		b = append(b, e.Data[start:skipValue(e.Data, start)]...)
	}
	return append(b, "}}"...)
}

// canonicalID returns id without surrounding whitespace if it is a valid
// JSON-RPC id, otherwise "null".
func canonicalID(id []byte) []byte {
	null := []byte("null")
	if len(id) == 0 || Validate(id, Limits{MaxBytes: len(id)}) != nil {
		return null
	}
	start := skipWS(id, 0)
	v := id[start:skipValue(id, start)]
	if v[0] == '"' {
		return v
	}
	if _, ok := safeInt(v); ok {
		return v
	}
	return null
}

// appendQuoted appends s as a JSON string.
func appendQuoted(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
