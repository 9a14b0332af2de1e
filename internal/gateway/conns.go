package gateway

import (
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/identity"
)

// connTable tracks the server's TLS connections and, once a request on one
// has been identified, whose they are, so that Update can close the
// connections of a peer that lost access.
type connTable struct {
	mu    sync.Mutex
	conns map[net.Conn]*trackedConn
}

type trackedConn struct {
	conn net.Conn
	mu   sync.Mutex
	who  *peerRef // nil until a request on it was identified
	// reqs are the requests in flight on the connection (cut.go).
	reqs map[*connRequest]struct{}
}

// peerRef is who a connection or session belongs to.
type peerRef struct {
	id          identity.ID
	incarnation string
	// key and caller are set instead of id for an Identifier caller.
	key    string
	caller *admission.Caller
	// user is the person behind the caller (audit.Event.User), for the
	// events of what it opens; not part of its identity (same).
	user string
	// delegation is the ID of the delegation the caller presents, and del
	// what it was verified to say (delegation.go); "" and nil for none.
	// Sessions, tasks and streams are bound to it as to the identity.
	delegation string
	del        *delegated
}

// same reports whether r and o name one caller: the same identity and
// incarnation, or the same Identifier key.
func (r peerRef) same(o peerRef) bool {
	return r.id == o.id && r.incarnation == o.incarnation && r.key == o.key && r.delegation == o.delegation
}

// owner names r as the owner of stateless sessions and tasks.
func (r peerRef) owner() ownerKey { return ownerKey{r.id, r.key, r.delegation} }

type connKey struct{}

func newConnTable() *connTable { return &connTable{conns: make(map[net.Conn]*trackedConn)} }

// connContext is http.Server.ConnContext: it registers c.
func (t *connTable) connContext(ctx context.Context, c net.Conn) context.Context {
	tc := &trackedConn{conn: c}
	t.mu.Lock()
	t.conns[c] = tc
	t.mu.Unlock()
	return context.WithValue(ctx, connKey{}, tc)
}

// connState is http.Server.ConnState: it forgets closed connections.
func (t *connTable) connState(c net.Conn, st http.ConnState) {
	if st == http.StateClosed || st == http.StateHijacked {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
	}
}

func (t *connTable) snapshot() []*trackedConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*trackedConn, 0, len(t.conns))
	for _, tc := range t.conns {
		out = append(out, tc)
	}
	return out
}

// bind records that tc belongs to p; it reports whether this is the first
// identified request on the connection (to audit the accepted connection
// once).
func (tc *trackedConn) bind(p peerRef) (first bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.who == nil {
		tc.who = &p
		return true
	}
	return false
}

func (tc *trackedConn) peer() *peerRef {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.who
}

func connOf(ctx context.Context) *trackedConn {
	tc, _ := ctx.Value(connKey{}).(*trackedConn)
	return tc
}
