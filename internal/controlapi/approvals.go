package controlapi

import "time"

// Approval holds (see README "Approval holds"). A gateway holding a
// tools/call that its grant makes wait for a person registers it with
// POST PathApprovals (its own mTLS identity; tool nodes only) and learns
// the decision by long-polling GET PathApprovals/{id}?wait=1, which answers
// at once once the approval is decided and otherwise after at most
// ApprovalLongPoll; it withdraws a hold its caller gave up with POST
// PathApprovals/{id}/withdraw. An admin lists them with GET PathApprovals
// and decides with POST PathApprovals/{id}/approve or .../deny.
const (
	PathApprovals = "/v1/approvals"
	// ApprovalLongPoll bounds one long poll of an approval's status.
	ApprovalLongPoll = 25 * time.Second
)

// Approval statuses.
const (
	ApprovalPending   = "pending"
	ApprovalApproved  = "approved"
	ApprovalDenied    = "denied"
	ApprovalTimedOut  = "timed_out"
	ApprovalWithdrawn = "withdrawn"
)

// ApprovalRequest is what a gateway registers for a held call. It names
// the call (never its argument values: at most their SHA-256, when the
// gateway records it) and the grant that requires approval.
type ApprovalRequest struct {
	// Caller is the SPIFFE ID (or tailnet identity) making the call.
	Caller string `json:"caller"`
	Tool   string `json:"tool"`
	// Grant is the deciding grant's index in the whole policy document,
	// Group its approval group and PolicyVersion the version decided by.
	Grant         int    `json:"grant"`
	Group         string `json:"group"`
	PolicyVersion string `json:"policy_version"`
	// Timeout is how long the gateway holds the call.
	Timeout time.Duration `json:"timeout"`
	// EventID is the id of the gateway's audit event for the call.
	EventID    string `json:"event_id"`
	ArgsSHA256 string `json:"args_sha256,omitempty"`
}

// Approval is one held call as the coordinator records it.
type Approval struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// Gateway is the SPIFFE ID of the gateway holding the call.
	Gateway string `json:"gateway"`
	ApprovalRequest
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	// DecidedBy is the SPIFFE ID of the admin node that approved or
	// denied it.
	DecidedBy string `json:"decided_by,omitempty"`
	// Note is the reason a denier gave.
	Note string `json:"note,omitempty"`
}

// ApprovalDecision is the body of an approve or deny.
type ApprovalDecision struct {
	Reason string `json:"reason,omitempty"`
}

// MaxApprovalNote bounds the reason text of a denial.
const MaxApprovalNote = 1024
