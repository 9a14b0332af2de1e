package controlapi

import "time"

// PathServices: GET, the service catalog (Catalog): every tool and model
// service in the mesh, its addresses and status, the tools its gateway
// last reported with their pin status, and what one identity may use.
// An admin sees every service, and with ?as=KIND:NAME (an active node,
// such as agent:auditor) that node's access; any other node sees only its
// own view (the services it may connect to, the tools it may call) and
// may not name another node in ?as. ?service=KIND:NAME narrows the
// catalog to one service.
const PathServices = "/v1/services"

// Catalog is the answer of GET PathServices. Gateways report tools only:
// a service's resources, resource templates and prompts are not known to
// the coordinator, so the catalog has none.
type Catalog struct {
	// PolicyVersion is the version of the policy the access was computed
	// with; 0 when none is applied (then nothing is allowed).
	PolicyVersion int64 `json:"policy_version"`
	// As is the identity whose access the catalog shows ("agent:auditor"),
	// empty when it shows none (an admin without ?as).
	As string `json:"as,omitempty"`
	// Services are sorted by kind, then name.
	Services []CatalogService `json:"services"`
}

// CatalogService is one tool or model service.
type CatalogService struct {
	// Service is the service as policies name it: "tool:ledger".
	Service string   `json:"service"`
	ID      string   `json:"id"`
	Tags    []string `json:"tags"`
	// Addrs are the gateway addresses the service registered.
	Addrs []string `json:"addrs"`
	// Status is "serving" or "not serving", by the rule of
	// NodeInfo.Serving; LastSeen is when its gateway last watched the
	// netmap (zero: never).
	Status   string    `json:"status"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	// PinMode is the policy's pin mode for a tool service (enforce, warn
	// or off); empty for a model service.
	PinMode string `json:"pin_mode,omitempty"`
	// Tools are the tools its gateway reported last, sorted by name
	// (model services report none). A non-admin caller gets only the
	// tools it may call.
	Tools []CatalogTool `json:"tools"`
	// Access is set when the catalog has an As: whether As may connect
	// to the service, and the tool patterns of the grants linking them.
	Access *ServiceAccess `json:"access,omitempty"`
}

// ServiceAccess is what the catalog's identity may do at one service.
type ServiceAccess struct {
	Connect bool `json:"connect"`
	// ToolPatterns are the tools globs of the grants that link the
	// identity to the service, as written ("balance", "list_*",
	// "!drop_*"), sorted.
	ToolPatterns []string `json:"tool_patterns"`
}

// CatalogTool is one tool as its gateway last reported it.
type CatalogTool struct {
	Name string `json:"name"`
	// Hash is the definition's hash (package toolpin); Pinned is the
	// policy's pin for the tool, empty when it has none.
	Hash   string `json:"hash"`
	Pinned string `json:"pinned,omitempty"`
	// PinStatus is pinned, changed, unpinned or unchecked, as
	// 'agentmesh tools list' shows it; a changed tool is hidden and
	// refused by its gateway.
	PinStatus string `json:"pin_status"`
	// Access is set when the catalog has an As.
	Access *ToolAccess `json:"access,omitempty"`
}

// ToolAccess says whether the catalog's identity may call a tool,
// decided without the call's arguments.
type ToolAccess struct {
	Allowed bool `json:"allowed"`
	// Reason is the policy's reason code (allowed, no_grant, ...), or
	// tool_changed for a granted tool whose definition its pin refuses.
	Reason string `json:"reason"`
	// Conditional: a grant's when needs the call's arguments, so each
	// call is decided when made.
	Conditional bool `json:"conditional,omitempty"`
	// Approval, when set, is the group that must approve each call.
	Approval string `json:"approval,omitempty"`
}
