package netmap

import "fmt"

// checkDelegationLists bounds the delegation lists of a netmap, a peer's
// bytes: at most MaxRevocations revoked delegations and as many revoked
// people, at most MaxDelegations delegations, none longer than
// maxDelegationEntry bytes (a delegation token is bounded by
// delegation.MaxTokenBytes; IDs and e-mail addresses are far shorter).
func (m *Netmap) checkDelegationLists() error {
	if len(m.RevokedDelegations) > MaxRevocations || len(m.RevokedUsers) > MaxRevocations {
		return fmt.Errorf("netmap: %d revoked delegations and %d revoked people, at most %d each",
			len(m.RevokedDelegations), len(m.RevokedUsers), MaxRevocations)
	}
	if len(m.Delegations) > MaxDelegations {
		return fmt.Errorf("netmap: %d delegations, at most %d", len(m.Delegations), MaxDelegations)
	}
	for _, l := range [][]string{m.RevokedDelegations, m.RevokedUsers} {
		for _, s := range l {
			if len(s) > maxRevocationEntry {
				return fmt.Errorf("netmap: a revocation entry of %d bytes, at most %d", len(s), maxRevocationEntry)
			}
		}
	}
	for _, s := range m.Delegations {
		if len(s) > maxDelegationEntry {
			return fmt.Errorf("netmap: a delegation of %d bytes, at most %d", len(s), maxDelegationEntry)
		}
	}
	return nil
}

// Sizes of one entry of the delegation lists.
const (
	maxRevocationEntry = 320
	maxDelegationEntry = 8 << 10
)
