package controlapi

import "time"

// Delegations (README "Delegation: agents acting for people"). A person,
// with the certificate 'agentmesh login' gave them, asks POST
// PathDelegations for a delegation to an agent node (DelegationRequest,
// without From); an agent node holding one asks with its own certificate
// and From set to sub-delegate. The answer is the Delegation with its
// Token. GET PathDelegations lists them (a person: the ones rooted at
// them; an agent node: the ones issued to it or by it; an admin: all).
// POST PathDelegations/{id}/revoke revokes one and every delegation made
// from it (its person or an admin); POST PathUsers/{email}/revoke revokes
// a person (admin): their logins and every delegation rooted at them; and
// POST PathUsers/{email}/restore lets a revoked person sign in again.
const (
	PathDelegations = "/v1/delegations"
	PathUsers       = "/v1/users"
)

// DelegationRequest asks for a delegation.
type DelegationRequest struct {
	// To is the agent node's name ("NAME" or "agent:NAME").
	To string `json:"to"`
	// TTL is how long the delegation is valid (delegation.MinTTL to
	// delegation.MaxTTL; a sub-delegation no longer than its parent).
	TTL time.Duration `json:"ttl"`
	// Tools narrows it to "SERVICE/TOOL" entries (TOOL a glob); empty
	// means every tool (a sub-delegation: its parent's).
	Tools []string `json:"tools,omitempty"`
	// From is the ID of the delegation an agent node sub-delegates from;
	// empty for a person's.
	From string `json:"from,omitempty"`
}

// Delegation is one delegation as the coordinator records it.
type Delegation struct {
	ID string `json:"id"`
	// Parent is the delegation it was made from ("" for a person's).
	Parent string `json:"parent,omitempty"`
	// User is the person at the root of its chain (an e-mail address).
	User string `json:"user"`
	// Grantor is "user:EMAIL" or the granting agent's SPIFFE ID.
	Grantor string `json:"grantor"`
	// Agent is the name of the agent node it is issued to, and
	// Incarnation the registration it is bound to.
	Agent       string `json:"agent"`
	Incarnation string `json:"incarnation"`
	// Depth is the length of its chain (1: a person's).
	Depth     int       `json:"depth"`
	Tools     []string  `json:"tools"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// RevokedAt and RevokedBy are set once it is revoked.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
	// Token is the signed delegation, in the answer to its issue only.
	Token string `json:"token,omitempty"`
}

// RevokeResult answers a revocation: the delegations it revoked (a
// delegation's own ID first, then those made from it), and for a person
// the logins it ended.
type RevokeResult struct {
	Revoked []string `json:"revoked"`
	Logins  int      `json:"logins,omitempty"`
}
