// Package pki is agentmesh's certificate authority and TLS configuration:
// it creates and stores the mesh CA, issues short-lived node certificates
// carrying one SPIFFE ID, verifies peer certificates against the mesh's CA
// bundle with an injected clock, builds the TLS 1.3 configurations used on
// the data plane and the admin API, and renews a node's certificate before
// it expires.
//
// # Use
//
// The coordinator creates a CA once (NewCA, Save) and loads it afterwards
// (LoadCA). A node makes its own key (NewKey) and sends a CSR (CreateCSR);
// the coordinator decides the identity and calls (*CA).Issue. Servers use
// ServerTLS or NewServerTLS, clients ClientTLS, both with a Verifier; a
// joining node that holds no certificate yet uses PinnedClientTLS with the
// CA fingerprint from its auth key. A Renewer keeps the certificate fresh.
//
// # Threat model
//
// The network is hostile. An attacker may connect to any gateway or to the
// coordinator, present certificates from another CA, from another mesh
// (trust domain), expired certificates or certificates whose key they
// stole in the past, offer only TLS 1.2, or sit between a joining node and
// the coordinator. This package defends as follows:
//
//   - Only TLS 1.3 is negotiated, and the peer certificate is always
//     verified by Verifier against the mesh CA bundle at the injected clock's
//     time, never by Go's default verifier with the wall clock. Failures are
//     reported with a stable reason code for the audit trail.
//   - A certificate names exactly one SPIFFE ID in exactly the verifier's
//     trust domain; anything else is refused rather than guessed at.
//   - Certificates live at most MaxTTL, so a stolen key is useful for hours
//     at most. Active revocation (incarnations) is the registry's job, not
//     this package's: callers check Incarnation against the node record.
//   - Issue ignores the subject and SANs of the CSR: the coordinator
//     decides who a node is, a node can only prove it holds its key.
//   - The CA certificate is name-constrained to its trust domain and cannot
//     sign intermediates (MaxPathLen 0), so a leaked leaf key cannot mint
//     further certificates.
//   - Joining pins the CA by SHA-256 fingerprint: the joining node sends
//     nothing until the server proved it holds a certificate issued by the
//     pinned CA, so a node never trusts the coordinator on first use.
//   - The CA key is written with mode 0600 and refused when readable by
//     group or others.
//
// Out of scope: an attacker who controls the coordinator host (and so the
// CA key), and denial of service.
package pki
