// Package admission decides who may talk to a gateway at all: it turns the
// identity a request arrives with (a mesh certificate, or a caller a
// transport such as a tailnet vouches for) into a peer of the State the
// gateway enforces, or into a refusal with a stable reason code, and it
// records refusals in the audit trail.
//
// The MCP gateway (package gateway), the model gateway (package modelgw)
// and the tailnet front end (package tailnet, an Identifier) share it, so
// the three admit and refuse by the same rules and with the same codes.
//
// # Use
//
//	st := admission.NewState(self, view.Netmap, view.Policy, view.Stale) // on every view
//	a, why := admission.Identify(st, r, ident)                          // on every request
//	if why != "" { refuse: a.Src names the client as far as it could be named }
//	decide a's requests under a.State with a.Node as the source
//
// # Threat model
//
// Every client is a remote party that may be malicious: somebody without a
// mesh certificate, a node holding a valid certificate, or one holding a
// stolen, revoked or outdated one. Admission defends as follows; what an
// admitted client may then do is the policy's business, decided per
// message by the gateway.
//
//   - Identity comes only from the verified TLS client certificate
//     (identity.FromCertificate and pki.Incarnation; the TLS configuration
//     from pki.NewServerTLS has verified the chain), never from a header.
//     The certificate must name an active peer of the current State, with
//     the incarnation the netmap lists for it, and the policy must link it
//     to the gateway's Self; otherwise the client is refused:
//     no_certificate, bad_identity, unknown_peer (absent from the netmap,
//     or another identity under that name), revoked (the netmap lists it
//     as revoked), stale_incarnation (a certificate of an earlier
//     registration of the name, which a revoked node's name taken again
//     does not revive), no_policy or no_grant. Tags come from the State,
//     never from the peer.
//   - A State whose view of the mesh has gone unconfirmed for longer than
//     a certificate lifetime (State.Stale) admits nobody (stale_netmap): a
//     gateway restarted from an old cache while the coordinator is away
//     would otherwise admit nodes revoked meanwhile without bound.
//   - The one exception to certificates is an Identifier, for a listener
//     whose transport authenticates its peers itself (a tailnet's
//     WireGuard): a request without TLS is then identified by the
//     Identifier on every request and refused on any doubt. A caller's Key
//     binds what it holds (sessions, connections) to it; an empty Key is
//     refused. Recheck identifies an open caller again when the transport
//     reports changes, and a caller whose address another node now holds
//     is refused (unknown_peer). Without an Identifier, a request without
//     a certificate is refused.
//   - The zero State, and a nil one, admit nobody.
//   - Every refusal is audited, as a connection event with its reason and
//     the client's address (and identity as far as it could be read),
//     before it is answered. Refusals are aggregated per source
//     (audit.Refusals) so that a client refused over and over cannot bury
//     the trail; the answer carries the id of the event that accounts for
//     the attempt.
//   - Connections that have not finished their TLS handshake are bounded
//     (ServeOn, package connlimit): anybody who can reach the port can open
//     them, and without a bound enough of them exhaust the gateway's file
//     descriptors before any certificate is seen. Refused and closed
//     connections are audited too.
//
// What admission does not defend: a control server (or coordinator) that
// lies about identities, and a node whose key is stolen, until it is
// revoked and the netmap reaches the gateway.
package admission
