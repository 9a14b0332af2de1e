package audit

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// ShadowError is the decision of a shadow policy whose evaluation failed:
// the active decision stands, and the failure is recorded as a difference.
const ShadowError Decision = "error"

// ShadowDecision is what a shadow policy (a candidate applied next to the
// active one, `agentmesh policy shadow`) decided about a request whose
// active decision was different. The gateway enforces the active decision;
// this only records what the shadow would have done. It is part of the
// canonical encoding, so the hash chain covers it like every other field.
type ShadowDecision struct {
	// Decision is Allow, Deny or ShadowError.
	Decision Decision    `json:"decision"`
	Reason   reason.Code `json:"reason,omitempty"`
	Rule     string      `json:"rule,omitempty"`
	// PolicyVersion names the shadow version ("shadow-N").
	PolicyVersion string `json:"policy_version,omitempty"`
}

// appendShadow appends s's canonical encoding after the key "shadow", as
// encoding/json writes it.
func appendShadow(dst []byte, s *ShadowDecision) []byte {
	dst = append(dst, `,"shadow":{"decision":`...)
	dst = appendJSONString(dst, string(s.Decision))
	dst = appendField(dst, `,"reason":`, string(s.Reason))
	dst = appendField(dst, `,"rule":`, s.Rule)
	dst = appendField(dst, `,"policy_version":`, s.PolicyVersion)
	return append(dst, '}')
}

// problem describes what is wrong with s, or returns "".
func (s *ShadowDecision) problem() string {
	switch s.Decision {
	case Allow, Deny, ShadowError:
	default:
		return fmt.Sprintf("shadow decision %.40q is not allow, deny or error", s.Decision)
	}
	for _, f := range []struct{ name, v string }{
		{"shadow reason", string(s.Reason)}, {"shadow rule", s.Rule}, {"shadow policy_version", s.PolicyVersion},
	} {
		if len(f.v) > maxFieldLen {
			return f.name + " longer than " + strconv.Itoa(maxFieldLen) + " bytes"
		}
		if !utf8.ValidString(f.v) {
			return f.name + " is not valid UTF-8"
		}
	}
	return ""
}
