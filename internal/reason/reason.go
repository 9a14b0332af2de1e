// Package reason is agentmesh's one vocabulary of reason codes: the stable,
// machine-readable word that says why something was allowed or refused.
//
// A code travels unchanged through every layer that handles the decision:
// the policy's Decision, a certificate check, a gateway's admission, the
// JSON-RPC error or HTTP body the client reads, the audit event that
// records it and the coordinator's API errors. So every code is defined
// here, exactly once, and the packages that decide (policy, pki, admission,
// gateway, modelgw, tailnet, connlimit, loopback, coordinator, audit) use
// these constants instead of strings of their own.
//
// Codes are part of agentmesh's interface: clients, scripts and dashboards
// match on them. A code is never renamed or reused for another meaning; a
// new situation gets a new code. The README's "Reason codes" table lists
// every code, and a test keeps that table and this file equal.
//
// The zero Code means no reason: nothing was refused.
package reason

// Code is a stable reason code. Its underlying string is what JSON-RPC
// errors, HTTP bodies, audit events and API errors carry.
type Code string

// Policy decisions (policy.Decision.Reason): why the policy allowed or
// denied a request.
const (
	// Allowed: a grant linking the source to the destination covers the
	// item, and its when held.
	Allowed Code = "allowed"
	// NoPolicy: there is no policy (a nil *policy.Policy, or a gateway
	// that has not received one), so everything is denied.
	NoPolicy Code = "no_policy"
	// NoGrant: no grant links the source to the destination at all. At a
	// gateway it also refuses admission: a peer no grant links here is not
	// admitted.
	NoGrant Code = "no_grant"
	// NotGranted: the source and destination are linked, but no grant's
	// globs cover the item, a '!' entry excludes it, or the grants are
	// connection-only.
	NotGranted Code = "not_granted"
	// WhenFalse: a grant covers the item but its when evaluated to false.
	WhenFalse Code = "when_false"
	// WhenError: a grant covers the item but its when failed to evaluate
	// (missing argument, wrong type, cost limit): fail closed.
	WhenError Code = "when_error"
	// BadRequest: the request itself is invalid. From the policy: zero
	// Action, empty name, invalid node kind or name. From the coordinator:
	// a control API body that does not decode, or a malformed field in it.
	BadRequest Code = "bad_request"
	// UnsafeURI: the resource URI has a dot-dot segment, a percent-encoded
	// '/', '.', '\' or control character, or a doubly encoded octet; such
	// URIs are refused rather than normalised.
	UnsafeURI Code = "unsafe_uri"
	// NonCanonicalURI: the resource URI (or template) is not in canonical
	// form (scheme or host case, percent-encoding, "." or empty segments,
	// default port, ...). It is refused rather than matched, since the
	// gateway forwards it as spelled and the server may resolve it to a
	// resource a glob excludes. It differs from UnsafeURI because it has a
	// remedy (send the canonical spelling), so the trail tells a client
	// library's odd spelling from a traversal attempt.
	NonCanonicalURI Code = "noncanonical_uri"
	// CaseVariantKey: the arguments hold a key that differs only in case
	// from a key some when reads ("Max_Tokens" for max_tokens); a
	// case-insensitive upstream would bind what the when never saw.
	CaseVariantKey Code = "case_variant_key"
)

// Certificate checks (package pki): why a peer's certificate or handshake
// was refused, at a gateway's or the coordinator's TLS listener, by the
// coordinator's API, or by a client checking the server it reached.
const (
	// NoCertificate: the peer presented no client certificate.
	NoCertificate Code = "no_certificate"
	// UnknownCA: the certificate does not chain to the mesh CA.
	UnknownCA Code = "unknown_ca"
	// Expired: the certificate has expired.
	Expired Code = "expired"
	// NotYetValid: the certificate is not valid yet.
	NotYetValid Code = "not_yet_valid"
	// WrongTrustDomain: the certificate's SPIFFE ID is of another trust
	// domain.
	WrongTrustDomain Code = "wrong_trust_domain"
	// BadIdentity: the certificate does not carry exactly one valid
	// agentmesh SPIFFE ID.
	BadIdentity Code = "bad_identity"
	// WrongUsage: the certificate is not for this use (client or server
	// authentication).
	WrongUsage Code = "wrong_usage"
	// WrongPeer: the server reached is not the identity the client meant
	// to reach.
	WrongPeer Code = "wrong_peer"
	// TLSVersion: the peer offers only TLS versions older than 1.3.
	TLSVersion Code = "tls_version"
	// FingerprintMismatch: the coordinator's CA is not the one the auth
	// key pins.
	FingerprintMismatch Code = "fingerprint_mismatch"
	// BadCertificate: the certificate was refused for a reason none of the
	// codes above names.
	BadCertificate Code = "bad_certificate"
)

// Admission (package admission): why a gateway does not admit a peer whose
// certificate is valid. A peer absent from the netmap is UnknownPeer, a
// certificate of a registration the netmap lists as revoked is Revoked;
// NoCertificate, BadIdentity, NoPolicy and NoGrant also refuse admission.
const (
	// UnknownPeer: the peer is not an active node of the gateway's view of
	// the mesh (absent, of another kind, or another node now holds its
	// tailnet address), or an Identifier could not name it. At the
	// coordinator: the certificate's incarnation names no registration it
	// knows.
	UnknownPeer Code = "unknown_peer"
	// Revoked: the certificate was issued to a registration that has been
	// revoked, at a gateway and at the coordinator alike (also when the
	// name has joined again since). A connector whose node the coordinator
	// calls revoked answers its MCP client with it too.
	Revoked Code = "revoked"
	// StaleIncarnation: the certificate was issued for an earlier
	// registration of the name (its incarnation is not the active one).
	StaleIncarnation Code = "stale_incarnation"
	// StaleNetmap: the coordinator has not confirmed the gateway's view of
	// the mesh for longer than a certificate lifetime, so nobody is
	// admitted until it answers again.
	StaleNetmap Code = "stale_netmap"
)

// Tailnet callers (package tailnet): why a caller identified with WhoIs
// was refused.
const (
	// WhoIsFailed: WhoIs did not name a node for the remote address, or
	// named an untagged node without an owner.
	WhoIsFailed Code = "whois_failed"
	// BadNodeName: the tagged node's host name is not a valid agentmesh
	// name.
	BadNodeName Code = "bad_node_name"
	// NoCapability: the rules come from the tailnet policy, and it grants
	// the caller no agentmesh capability towards this node.
	NoCapability Code = "no_capability"
	// BadCapability: a capability value does not decode strictly or does
	// not compile.
	BadCapability Code = "bad_capability"
)

// Requests at a gateway (packages gateway and modelgw): why a message or
// HTTP request from an admitted peer was refused, or how it ended.
const (
	// ToolChanged: the tool's definition, as the gateway last saw it from
	// the server, does not match the definition pinned in the policy's
	// tool_pins (or the tool has no pin and its server's mode is
	// "enforce", or the gateway has not seen the tool listed yet). The
	// tool is hidden from lists and its calls refused until the change
	// is reviewed and pinned (agentmesh tools approve).
	ToolChanged Code = "tool_changed"
	// UnknownMethod: an MCP method outside the gateway's allow list.
	UnknownMethod Code = "unknown_method"
	// Malformed: the body is not one strictly valid message (duplicate or
	// case-variant keys, invalid UTF-8, too deep), or a params key differs
	// only in case from one the gateway reads; for a model request, not
	// one object with unique keys and a string model.
	Malformed Code = "malformed"
	// BatchRejected: a JSON-RPC batch; one POST carries one message.
	BatchRejected Code = "batch_rejected"
	// HeaderMismatch: Mcp-Method, Mcp-Name, Mcp-Protocol-Version or an
	// Mcp-Param-* header disagrees with the body.
	HeaderMismatch Code = "header_mismatch"
	// UnknownSession: the Mcp-Session-Id names no session the gateway
	// knows, or a session-less request reached a stdio upstream.
	UnknownSession Code = "unknown_session"
	// SessionOwnerMismatch: the session id belongs to another identity
	// (answered exactly as an unknown id).
	SessionOwnerMismatch Code = "session_owner_mismatch"
	// UnknownTask: a tasks/* request names a task the caller did not
	// create, or one the gateway no longer knows.
	UnknownTask Code = "unknown_task"
	// BadHTTPRequest: an HTTP method other than GET, POST and DELETE, a
	// repeated or empty session id, or a Last-Event-ID on a GET without a
	// session.
	BadHTTPRequest Code = "bad_http_request"
	// BadPath: a model API URL path that is not canonical
	// (percent-encoding, dot or empty segments).
	BadPath Code = "bad_path"
	// TooLarge: the request body is over its size limit.
	TooLarge Code = "too_large"
	// IncompleteBody: the connection failed before the request body was
	// in (closed by the client, or by a bound of the listener).
	IncompleteBody Code = "incomplete_body"
	// UpstreamError: the upstream could not be reached, failed, or
	// answered what the gateway cannot pass on (a list it cannot filter).
	UpstreamError Code = "upstream_error"
	// AuditFailed: the request was allowed but its audit event could not
	// be recorded, so its answer was withheld (HTTP 503).
	AuditFailed Code = "audit_failed"
	// Idle: a session ended because nothing used it for the idle timeout.
	Idle Code = "idle"
	// UsageRequired: a streamed chat or text completion under a
	// tokens_per_day limit did not set stream_options.include_usage, so
	// its tokens could not be counted.
	UsageRequired Code = "usage_required"
	// LimitRPM: the source went over a limit's requests per minute.
	LimitRPM Code = "limit_rpm"
	// LimitTokens: the source used up a limit's tokens per day.
	LimitTokens Code = "limit_tokens"
	// LimitsUnavailable: the limit counters cannot be counted (table full
	// or store failing), so a limit that applies cannot be enforced.
	LimitsUnavailable Code = "limits_unavailable"
)

// Resource caps (packages gateway, modelgw, budget): what an admitted peer
// may make a gateway hold. A request over a cap is refused at once, never
// queued.
const (
	// TooManyRequests: the peer already has as many requests in flight,
	// open streams included, as it may.
	TooManyRequests Code = "too_many_requests"
	// TooManySessions: an initialize would open more sessions than the
	// peer may hold.
	TooManySessions Code = "too_many_sessions"
	// TooManyProcesses: a session would start more stdio upstream
	// processes than the peer, or the gateway, may run.
	TooManyProcesses Code = "too_many_processes"
	// OverBudget: the request body does not fit in what remains of the
	// peer's or the gateway's memory budget for bodies.
	OverBudget Code = "over_budget"
	// BodyTimeout: the request body did not arrive whole in time.
	BodyTimeout Code = "body_timeout"
)

// Connection bounds (package connlimit, and the coordinator's join rate):
// why a connection or attempt was refused before anybody was identified.
const (
	// TooManyConnections: a connection budget was full (the source's own,
	// or the global one, whose longest-held connection was closed).
	TooManyConnections Code = "too_many_connections"
	// HandshakeTimeout: the TLS handshake did not finish in time.
	HandshakeTimeout Code = "handshake_timeout"
	// ConnLifetime: a connection without a client certificate was open
	// longer than its lifetime.
	ConnLifetime Code = "conn_lifetime"
	// RateLimited: a source asked more often than its rate limiter allows
	// (join attempts), or too many joins are in progress.
	RateLimited Code = "rate_limited"
)

// Local endpoints (package loopback): why the agent's local endpoint
// refused a request, which never left the machine.
const (
	// NotLocal: the Host or Origin is not local (DNS rebinding).
	NotLocal Code = "not_local"
	// LocalAuth: the endpoint requires its bearer token and the request
	// did not carry it.
	LocalAuth Code = "local_auth"
)

// Connectors (package connector, and the engine's resolution of a
// service): why a request from the agent's MCP client never reached a
// gateway. A refusal by the gateway itself carries the gateway's code
// (revoked, for a revoked agent).
const (
	// UnknownService: this node's netmap names no service by that name (a
	// typo, or no grant lets this node reach it).
	UnknownService Code = "unknown_service"
	// NotServing: the service has joined the mesh but registers no
	// address: its gateway ('agentmesh serve') is not running.
	NotServing Code = "not_serving"
	// GatewayUnreachable: the service's gateway could not be reached at
	// the address it registered, or the connection broke before its
	// answer.
	GatewayUnreachable Code = "gateway_unreachable"
)

// The coordinator's control API: why a join, renewal or admin request was
// refused. Certificate codes above also apply.
const (
	// NotAdmin: the operation needs an admin identity.
	NotAdmin Code = "not_admin"
	// BadName: a node or key name is not a valid agentmesh name, or is
	// reserved.
	BadName Code = "bad_name"
	// BadCSR: the certificate request does not parse or is not signed by
	// its key.
	BadCSR Code = "bad_csr"
	// BadKind: an auth key's kind is not a node kind.
	BadKind Code = "bad_kind"
	// BadTags: a tag list holds an invalid tag.
	BadTags Code = "bad_tags"
	// BadExpiry: an auth key's expiry is out of range.
	BadExpiry Code = "bad_expiry"
	// BadAddress: a registered address is not HOST:PORT.
	BadAddress Code = "bad_address"
	// BadEvent: a shipped audit event does not validate.
	BadEvent Code = "bad_event"
	// KeyUnknown: the auth key is not known to this coordinator (or its
	// secret does not match).
	KeyUnknown Code = "key_unknown"
	// KeyRevoked: the auth key has been revoked.
	KeyRevoked Code = "key_revoked"
	// KeyExpired: the auth key has expired.
	KeyExpired Code = "key_expired"
	// KeyUsed: the single-use auth key has been used already.
	KeyUsed Code = "key_used"
	// KindNotAllowed: the auth key is for another node kind.
	KindNotAllowed Code = "kind_not_allowed"
	// NameNotAllowed: the auth key is pinned to another name.
	NameNotAllowed Code = "name_not_allowed"
	// NameTaken: the name is held by another active node (revoke it
	// first, or pick another name).
	NameTaken Code = "name_taken"
	// NotServingKind: only tool and model nodes register addresses.
	NotServingKind Code = "not_serving_kind"
	// SelfRevoke: an admin asked to revoke its own identity.
	SelfRevoke Code = "self_revoke"
	// NotFound: no such key, node or policy version.
	NotFound Code = "not_found"
	// InvalidPolicy: the policy document does not compile or a test in it
	// fails; the active policy stays.
	InvalidPolicy Code = "invalid_policy"
	// Internal: the coordinator failed; the answer carries a reference to
	// its log.
	Internal Code = "internal"
)

// The audit trail's integrity (package audit, at the coordinator): reasons
// of integrity events.
const (
	// ForeignEvent: a node shipped a batch with an event it may not record
	// (another destination, or a kind nodes do not record); the whole
	// batch was refused.
	ForeignEvent Code = "foreign_event"
	// IDConflict: an event arrived under a (dst, id) already stored with
	// different content. The new content is kept in the integrity event;
	// the stored event is left as it was.
	IDConflict Code = "id_conflict"
)

// Single sign-on (the coordinator's OpenID Connect issuer): why an ID
// token, a login or a join by a person was refused.
const (
	// SSONotConfigured: the coordinator has no OpenID Connect issuer, so
	// it signs nobody in.
	SSONotConfigured Code = "sso_not_configured"
	// SSOBadToken: the ID token is malformed or its signature does not
	// verify against the issuer's published keys.
	SSOBadToken Code = "sso_bad_token"
	// SSOExpired: the ID token expired longer ago than the allowed clock skew.
	SSOExpired Code = "sso_expired"
	// SSOClockSkew: the ID token is issued in the future beyond the
	// allowed clock skew.
	SSOClockSkew Code = "sso_clock_skew"
	// SSOForeignIssuer: the ID token comes from another issuer than the
	// coordinator's.
	SSOForeignIssuer Code = "sso_foreign_issuer"
	// SSOWrongAudience: the ID token was issued to another client.
	SSOWrongAudience Code = "sso_wrong_audience"
	// SSONoEmail: the ID token names no verified e-mail address that is a
	// valid user name.
	SSONoEmail Code = "sso_no_email"
	// SSOTokenUsed: the ID token signed in once already; each signs in
	// once, so a copied token cannot sign in again.
	SSOTokenUsed Code = "sso_token_used"
	// OwnerNotAllowed: the policy's node_owners does not let this person
	// join a node of this kind with these tags.
	OwnerNotAllowed Code = "owner_not_allowed"
)

// Delegation (package delegation, checked by gateways; issued by the
// coordinator): why a delegation a caller presented, or asked for, was
// refused.
const (
	// DelegationMalformed: the delegation is not one agentmesh issues (bad
	// encoding, an impossible chain, too long).
	DelegationMalformed Code = "delegation_malformed"
	// DelegationBadSignature: the delegation's signature does not verify
	// under the mesh CA.
	DelegationBadSignature Code = "delegation_bad_signature"
	// DelegationForeign: the delegation is for another trust domain.
	DelegationForeign Code = "delegation_foreign"
	// DelegationWrongAgent: the delegation was issued to another node (or
	// another incarnation of it) than the one presenting it.
	DelegationWrongAgent Code = "delegation_wrong_agent"
	// DelegationExpired: the delegation expired longer ago than the
	// allowed clock skew.
	DelegationExpired Code = "delegation_expired"
	// DelegationClockSkew: the delegation is issued in the future beyond
	// the allowed clock skew.
	DelegationClockSkew Code = "delegation_clock_skew"
	// DelegationTooDeep: the chain of delegations (person to agent to
	// sub-agent ...) is longer than allowed.
	DelegationTooDeep Code = "delegation_too_deep"
	// DelegationRevoked: the delegation, one it was made from, or the
	// person who granted it has been revoked.
	DelegationRevoked Code = "delegation_revoked"
	// DelegationOutOfScope: the request is outside the tools the
	// delegation names.
	DelegationOutOfScope Code = "delegation_out_of_scope"
	// DelegationExceedsGrantor: the delegation (asked for, or used) covers
	// more than the person or agent granting it may do under the policy.
	DelegationExceedsGrantor Code = "delegation_exceeds_grantor"
)
