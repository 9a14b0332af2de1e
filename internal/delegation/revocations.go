package delegation

// Revocations is what a gateway knows has been revoked, from its netmap:
// delegation IDs (a revoked link revokes every delegation made from it)
// and people (revoking a person revokes every delegation they are the root
// of). The zero or nil *Revocations revokes nothing. It is immutable.
type Revocations struct {
	ids   map[string]struct{}
	users map[string]struct{}
}

// NewRevocations builds the set from the netmap's lists.
func NewRevocations(ids, users []string) *Revocations {
	r := &Revocations{ids: make(map[string]struct{}, len(ids)), users: make(map[string]struct{}, len(users))}
	for _, id := range ids {
		r.ids[id] = struct{}{}
	}
	for _, u := range users {
		r.users[u] = struct{}{}
	}
	return r
}

// Revoked reports whether c's person or any link of its chain is revoked.
func (r *Revocations) Revoked(c *Claims) bool {
	if r == nil || c == nil {
		return false
	}
	if _, ok := r.users[c.User]; ok {
		return true
	}
	for _, l := range c.Chain {
		if _, ok := r.ids[l.ID]; ok {
			return true
		}
	}
	return false
}
