package controlapi

import "time"

// Shadow mode paths (admin): POST PathShadow applies a shadow policy
// (PolicyApplyRequest, answers ShadowPolicy), GET returns the current one
// (ShadowPolicy; Version 0 when none), DELETE clears it (ShadowPolicy of
// the shadow cleared). POST PathShadowPromote makes the shadow the active
// policy (answers PolicyVersion, the new active version); GET
// PathShadowStatus summarises the differences recorded so far
// (ShadowStatus).
const (
	PathShadow        = "/v1/policy/shadow"
	PathShadowPromote = "/v1/policy/shadow/promote"
	PathShadowStatus  = "/v1/policy/shadow/status"
)

// ShadowPolicy is one shadow policy version. Version 0 means there is no
// shadow policy.
type ShadowPolicy struct {
	Version int64 `json:"version"`
	// Name is how events name it: "shadow-VERSION".
	Name      string    `json:"name,omitempty"`
	AppliedAt time.Time `json:"applied_at,omitzero"`
	AppliedBy string    `json:"applied_by,omitempty"`
	Document  string    `json:"document,omitempty"`
}

// ShadowStatus summarises the differences between the shadow policy and
// the active one that gateways recorded, from the audit trail.
type ShadowStatus struct {
	// Shadow is the current shadow policy (without its document);
	// Version 0 when there is none, and then nothing else is set.
	Shadow ShadowPolicy `json:"shadow"`
	// ActiveVersion is the active policy's version now.
	ActiveVersion int64 `json:"active_version"`
	// Requests is how many request events the summary read; Differences
	// how many of them carried this shadow's decision.
	Requests    int64 `json:"requests"`
	Differences int64 `json:"differences"`
	// Groups are the differences grouped, most frequent first; at most
	// MaxShadowGroups, with Omitted counting the differences of the
	// groups left out.
	Groups  []ShadowGroup `json:"groups"`
	Omitted int64         `json:"omitted,omitempty"`
}

// MaxShadowGroups bounds ShadowStatus.Groups.
const MaxShadowGroups = 1000

// ShadowGroup is the differences of one kind: one source, destination and
// target (tool, resource, prompt or model), with one active decision and
// one shadow decision.
type ShadowGroup struct {
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	Method   string `json:"method,omitempty"`
	Tool     string `json:"tool,omitempty"`
	Resource string `json:"resource,omitempty"`
	Prompt   string `json:"prompt,omitempty"`
	Model    string `json:"model,omitempty"`
	// Active and Shadow are the decisions: allow or deny, and the
	// shadow's may be error.
	Active string    `json:"active"`
	Shadow string    `json:"shadow"`
	Count  int64     `json:"count"`
	First  time.Time `json:"first"`
	Last   time.Time `json:"last"`
	// Examples are ids of a few of the group's events (audit show).
	Examples []string `json:"examples"`
}
