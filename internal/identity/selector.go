package identity

import (
	"fmt"
	"strings"
)

// ParseSelector parses a node selector, "KIND:NAME" such as
// "agent:auditor" (the form ID.Selector prints and policies use for one
// node).
func ParseSelector(s string) (Kind, Name, error) {
	k, n, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("%w: %q: want KIND:NAME, such as agent:auditor", ErrBadName, s)
	}
	kind, err := ParseKind(k)
	if err != nil {
		return "", "", err
	}
	name, err := ParseName(n)
	if err != nil {
		return "", "", err
	}
	return kind, name, nil
}
