package policy

import (
	"errors"
	"fmt"
)

// Sentinel errors returned (wrapped) by Compile; match them with errors.Is.
var (
	// ErrSyntax means the document is not valid HuJSON.
	ErrSyntax = errors.New("policy syntax error")
	// ErrInvalid means the document is HuJSON but not a valid policy:
	// unknown keys, bad selectors or globs, a when that does not compile,
	// cyclic or undefined groups, or a document over the size limits.
	ErrInvalid = errors.New("invalid policy")
	// ErrTestFailed means the policy is valid but one of its tests failed.
	ErrTestFailed = errors.New("policy test failed")
)

// Error is one problem at a position in a policy document. Compile returns
// an *Error, or several joined with errors.Join; each unwraps to ErrSyntax,
// ErrInvalid or ErrTestFailed.
type Error struct {
	// Line and Column are 1-based; Column counts bytes. Both are 0 when the
	// problem concerns the document as a whole.
	Line, Column int
	// Path names the offending value, such as "grants[2].tools[0]".
	Path string
	// Msg says what is wrong.
	Msg string
	// Kind is ErrSyntax, ErrInvalid or ErrTestFailed.
	Kind error
}

// Error returns "KIND: LINE:COL: PATH: MSG".
func (e *Error) Error() string {
	s := e.Kind.Error() + ": "
	if e.Line > 0 {
		s += fmt.Sprintf("%d:%d: ", e.Line, e.Column)
	}
	if e.Path != "" {
		s += e.Path + ": "
	}
	return s + e.Msg
}

// Unwrap returns the sentinel Kind.
func (e *Error) Unwrap() error { return e.Kind }
