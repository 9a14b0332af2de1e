package aggregate

import (
	"errors"
	"fmt"
	"strings"
)

// maxSeparator is the longest separator CheckSeparator allows.
const maxSeparator = 8

// SeparatorRule says, for people, which separators CheckSeparator allows.
const SeparatorRule = "1 to 8 characters, each '_', '.' or '-'"

// CheckSeparator reports whether sep may join a service's name and its
// tools' and prompts' names: 1 to 8 characters, each '_', '.' or '-'.
// Those are the characters MCP allows in a tool name besides letters and
// digits, so that every aggregated name is a valid tool name and the
// separator is never part of a word. '.' never appears in a service's
// name; '_' and '-' may, and a service whose name contains the separator
// (or ends with part of it, so that the aggregated name would read
// differently) is skipped, as is a tool or prompt whose name contains
// it: an aggregated name always has exactly one reading.
func CheckSeparator(sep string) error {
	if sep == "" {
		return errors.New("the separator is empty (" + SeparatorRule + ")")
	}
	if len(sep) > maxSeparator {
		return fmt.Errorf("the separator %q is too long (%s)", sep, SeparatorRule)
	}
	if strings.Trim(sep, "_.-") != "" {
		return fmt.Errorf("the separator %q has a character other than '_', '.' or '-' (%s)", sep, SeparatorRule)
	}
	return nil
}
