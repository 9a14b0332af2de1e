package audit

import (
	"fmt"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// tailnetPrefix starts the Src of a caller identified on a tailnet
// (tailnet.SrcPrefix; this package sits below tailnet).
const tailnetPrefix = "tailnet:"

// CheckSelector returns an error that says what is expected for a Src or
// Dst filter that can match no event, so that a typo is refused rather
// than answered with nothing. Events record a SPIFFE ID, a tailnet
// identity (tailnet:HOST, tailnet:HOST/LOGIN) or no identity; a filter
// matches them as a SPIFFE ID, a selector KIND:NAME of a node kind and
// name (in any trust domain), a tailnet identity, or "" and "*" for all.
// A bare NAME, another kind, or a tag or group selector matches nothing.
func CheckSelector(sel string) error {
	switch {
	case sel == "" || sel == "*", strings.HasPrefix(sel, "spiffe://"), strings.HasPrefix(sel, tailnetPrefix):
		return nil
	case strings.HasPrefix(sel, "tag:") || strings.HasPrefix(sel, "group:"):
		return fmt.Errorf("%q: events record identities, not tags or groups; want %s", sel, selectorForms)
	}
	kind, name, ok := strings.Cut(sel, ":")
	if !ok {
		return fmt.Errorf("%q names no kind; want %s", sel, selectorForms)
	}
	if _, err := identity.ParseKind(kind); err != nil {
		return fmt.Errorf("%q: %w; want %s", sel, err, selectorForms)
	}
	if _, err := identity.ParseName(name); err != nil {
		return fmt.Errorf("%q: %w", sel, err)
	}
	return nil
}

const selectorForms = "agent:NAME, tool:NAME, model:NAME, admin:NAME, a SPIFFE ID (spiffe://DOMAIN/KIND/NAME) or a tailnet identity (tailnet:HOST)"
