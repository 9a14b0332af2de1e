package reason

// Approval holds (a grant with "approval", see policy and gateway): why a
// held tools/call did not proceed, and why the coordinator refused an
// approval request.
const (
	// ApprovalDenied: a member of the grant's approval group denied the
	// held call (agentmesh approvals deny).
	ApprovalDenied Code = "approval_denied"
	// ApprovalTimeout: nobody decided the held call within the grant's
	// approval_timeout, so it was denied.
	ApprovalTimeout Code = "approval_timeout"
	// ApprovalUnavailable: the call needs approval but the gateway could
	// not register it with the coordinator (unreachable, or it refused
	// the hold): fail closed.
	ApprovalUnavailable Code = "approval_unavailable"
	// ApprovalWithdrawn: the caller cancelled a held call
	// (notifications/cancelled, or it left) before anybody decided it.
	ApprovalWithdrawn Code = "approval_withdrawn"
	// ApprovalUnknown: a client's response names an elicitation of a hold
	// that the gateway does not wait on for this caller's session: sent to
	// another session or identity, already answered, or abandoned when
	// the hold ended.
	ApprovalUnknown Code = "approval_unknown"
	// TooManyHolds: the gateway already holds as many calls awaiting
	// approval as it allows, in all or for this caller; refused at once.
	TooManyHolds Code = "too_many_holds"
	// NotApprover: at the coordinator, the admin node deciding an approval
	// is not a member of the grant's approval group.
	NotApprover Code = "not_approver"
	// ApprovalDecided: at the coordinator, the approval was already
	// decided, withdrawn or timed out.
	ApprovalDecided Code = "approval_decided"
)
