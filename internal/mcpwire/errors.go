package mcpwire

import "errors"

// Errors returned by Decode, the Message accessors and FilterList. They are
// wrapped with detail (operation, byte offset, offending key); use errors.Is.
// [ErrorCode] maps them to a JSON-RPC error code.
var (
	// ErrTooLarge means the input is longer than Limits.MaxBytes.
	ErrTooLarge = errors.New("mcpwire: message too large")
	// ErrTooDeep means objects and arrays nest deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("mcpwire: message nested too deeply")
	// ErrInvalidUTF8 means the input holds invalid UTF-8 or a \u escape of a
	// lone surrogate.
	ErrInvalidUTF8 = errors.New("mcpwire: invalid UTF-8")
	// ErrSyntax means the input is not exactly one strict JSON value.
	ErrSyntax = errors.New("mcpwire: invalid JSON")
	// ErrDuplicateKey means an object holds the same key twice (after
	// unescaping).
	ErrDuplicateKey = errors.New("mcpwire: duplicate object key")
	// ErrCaseVariantKey means an object holds two keys that are equal under
	// Unicode case folding, or the envelope holds a case variant of one of
	// its keys (for example "Method").
	ErrCaseVariantKey = errors.New("mcpwire: case-variant object key")
	// ErrInvalidKey means an object key contains a control character (C0
	// or DEL, necessarily escaped): C-string based parsers truncate
	// "name\u0000x" to "name", turning it into a duplicate.
	ErrInvalidKey = errors.New("mcpwire: control character in object key")
	// ErrInvalidRequest means the JSON is valid but is not a JSON-RPC 2.0
	// request, notification or response (or is an empty batch).
	ErrInvalidRequest = errors.New("mcpwire: invalid JSON-RPC message")
	// ErrInvalidParams means the params of a message lack a field the
	// accessor needs, or hold it with the wrong type or forbidden characters.
	ErrInvalidParams = errors.New("mcpwire: invalid params")
	// ErrWrongMethod means an accessor was called on a message whose method
	// it does not read (for example ToolCall on resources/read).
	ErrWrongMethod = errors.New("mcpwire: accessor does not apply to this method")
	// ErrInvalidResult means a list result given to FilterList is not an
	// object holding the expected array.
	ErrInvalidResult = errors.New("mcpwire: invalid list result")
)

// JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// ErrorCode returns the JSON-RPC error code that answers err: CodeParseError
// for input that is not valid JSON text (syntax, UTF-8), CodeInvalidRequest
// for valid JSON that is rejected (size, depth, duplicate or case-variant
// keys, control characters in keys, envelope), CodeInvalidParams for bad params, and CodeInternalError
// for anything else, including nil.
func ErrorCode(err error) int {
	switch {
	case err == nil:
		return CodeInternalError
	case errors.Is(err, ErrSyntax), errors.Is(err, ErrInvalidUTF8):
		return CodeParseError
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrTooDeep),
		errors.Is(err, ErrDuplicateKey), errors.Is(err, ErrCaseVariantKey),
		errors.Is(err, ErrInvalidKey), errors.Is(err, ErrInvalidRequest):
		return CodeInvalidRequest
	case errors.Is(err, ErrInvalidParams), errors.Is(err, ErrWrongMethod):
		return CodeInvalidParams
	default:
		return CodeInternalError
	}
}
