package admission

import (
	"context"
	"net/http"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Caller is a client identified by an Identifier rather than by a
// certificate of the mesh's CA: for example a tailnet node identified with
// WhoIs. A gateway admits a Caller when its policy links Node to the
// gateway's Self, and enforces every message against that policy exactly as
// on the certificate path.
type Caller struct {
	// Node is the caller as the policy sees it (name, kind, tags, user).
	Node policy.Node
	// Src is written as the source of the caller's audit events, such as
	// "tailnet:agent-1.example.ts.net".
	Src string
	// Key binds sessions and connections to the caller: a session created
	// by one Key is refused to every other. It must be stable for one
	// identity and unique across identities (a tailnet node's stable ID);
	// an empty Key is refused.
	Key string
	// Addr is the remote address the caller was identified on; an
	// Identifier may use it to identify the caller again in Recheck.
	Addr string
	// Policy, when set, decides the caller's requests instead of
	// State.Policy (a policy derived from the caller's own grants). Nil
	// uses State.Policy; if that is nil too, everything is denied.
	Policy *policy.Policy
}

// Identifier identifies clients that come without a TLS client certificate,
// on a transport that authenticates them itself (a tailnet). It must fail
// closed: any doubt is a refusal.
type Identifier interface {
	// Identify returns the caller behind r and "", or the reason code of
	// a refusal (such as reason.WhoIsFailed). With a reason, the caller
	// may be nil or identified as far as it could be: its Src is then
	// written as the source of the refusal's audit event; it is never
	// admitted.
	Identify(r *http.Request, st *State) (*Caller, reason.Code)
	// Recheck identifies c again under st, after the transport reported a
	// change (a new netmap, changed capabilities). It returns the caller as
	// it is now and "", or a reason it lost access (as Identify).
	Recheck(ctx context.Context, c *Caller, st *State) (*Caller, reason.Code)
}

// Admitted is a client Identify admitted.
type Admitted struct {
	// Node is the client as the policy sees it.
	Node policy.Node
	// Src is the client's audit source: its SPIFFE ID, or an Identifier
	// caller's Src. On a refusal it names the client as far as it could
	// be named, and may be "".
	Src string
	// User is the person behind the client (audit.Event.User), as the
	// policy sees it (Node.User): a tailnet caller's WhoIs login, a mesh
	// node's owner from the netmap, never anything the client says. On
	// a refusal it is set when the client was identified that far (a
	// certificate of the registration the view lists), else "".
	User string
	// State is what to decide the client's requests under: the State it
	// was admitted under, or a copy carrying the caller's own policy.
	State *State
	// ID and Incarnation are those of the client's certificate; zero for
	// an Identifier caller.
	ID          identity.ID
	Incarnation string
	// Caller is the Identifier's caller; nil for a certificate.
	Caller *Caller
}

// Identify identifies the client of r and admits it under st: by its
// verified certificate when r came over TLS, else through ident (with ident
// nil: refused, no_certificate). It returns the admitted client and "", or
// the refusal's reason code with Admitted.Src set as far as the client
// could be named. A nil st refuses with no_policy.
func Identify(st *State, r *http.Request, ident Identifier) (Admitted, reason.Code) {
	if r.TLS == nil && ident != nil {
		if st == nil {
			return Admitted{}, reason.NoPolicy
		}
		c, why := ident.Identify(r, st)
		if c == nil || why != "" {
			if why == "" {
				why = reason.UnknownPeer
			}
			a := Admitted{}
			if c != nil {
				a.Src, a.User = c.Src, c.Node.User
			}
			return a, why
		}
		if why := st.CheckCaller(c); why != "" {
			return Admitted{Src: c.Src, User: c.Node.User}, why
		}
		return Admitted{Node: c.Node, Src: c.Src, User: c.Node.User, State: st.For(c), Caller: c}, ""
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Admitted{}, reason.NoCertificate
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return Admitted{}, reason.BadIdentity
	}
	a := Admitted{Src: id.String(), ID: id, Incarnation: pki.Incarnation(leaf)}
	if st == nil {
		return a, reason.NoPolicy
	}
	if p, ok := st.Peers[id.Name]; ok && p.ID == id && p.Incarnation == a.Incarnation && !p.Revoked {
		// The registration this certificate was issued for: its owner
		// is the person behind the call, admitted or not.
		a.User = p.Node.User
	}
	if why := st.Check(id, a.Incarnation); why != "" {
		return a, why
	}
	a.Node, a.State = st.Peers[id.Name].Node, st
	return a, ""
}

// Recheck identifies the caller c again through ident under st, after its
// transport reported a change, and admits it again. It returns the caller
// as it is now and "", or nil and the reason it lost access: the
// Identifier's, unknown_peer when the caller's address now belongs to
// another identity (another Key), or the reason CheckCaller gives.
func Recheck(ctx context.Context, ident Identifier, c *Caller, st *State) (*Caller, reason.Code) {
	nc, why := ident.Recheck(ctx, c, st)
	if why != "" {
		return nil, why
	}
	if nc == nil || nc.Key != c.Key {
		return nil, reason.UnknownPeer // nobody, or another node now holds the address
	}
	if why := st.CheckCaller(nc); why != "" {
		return nil, why
	}
	return nc, ""
}
