package gateway

import (
	"net/http"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// peerInfo is an identified, admitted client.
type peerInfo struct {
	ref   peerRef
	node  policy.Node
	state *admission.State
	addr  string
}

// identify finds the client of r and admits it under the current state
// (package admission). It returns the client, its audit source and the
// person behind it (audit.Event.User); on refusal the source and person
// as far as the client could be named, and the reason.
func (g *Gateway) identify(r *http.Request) (*peerInfo, string, string, reason.Code) {
	a, why := admission.Identify(g.state.Load(), r, g.cfg.Identifier)
	if why != "" {
		return nil, a.Src, a.User, why
	}
	ref := peerRef{id: a.ID, incarnation: a.Incarnation, user: a.User}
	if a.Caller != nil {
		ref = peerRef{key: a.Caller.Key, caller: a.Caller, user: a.User}
	}
	return &peerInfo{ref: ref, node: a.Node, state: a.State, addr: r.RemoteAddr}, a.Src, a.User, ""
}
