// Package alert is what the coordinator tells an operator's webhooks: the
// alert payload, its signature, and its delivery.
//
// An Alert is a small JSON document (id, kind, time, coordinator, subject,
// summary, details) made by the coordinator from what it already knows:
// counts, identities, node names, times. It never carries a secret or a
// tool call's arguments; details are numbers and names only.
//
// Every delivery is signed with the receiver's own secret: the header
//
//	Agentmesh-Signature: t=UNIX-SECONDS,v1=HEX(HMAC-SHA256(secret, "UNIX-SECONDS." + body))
//
// binds the body to the time it was sent, so a receiver that checks it with
// Verify knows the alert came from a coordinator holding the secret, was
// not changed on the way, and is not an old delivery replayed later than
// its tolerance. The alert id stays the same across retries, so a receiver
// drops the duplicates a lost answer causes.
//
// Threat model of delivery: the receiver is another party's server, and
// may be slow, broken or hostile. A Sender never blocks whoever raises an
// alert (the coordinator's ingest path): each receiver has a bounded queue
// that drops its oldest alert when full (counted and logged; alerts are
// notifications, the audit trail is the record). Each request has a
// timeout, redirects are not followed (a receiver cannot point the
// coordinator at another address), at most MaxResponseBody bytes of an
// answer are read, and a failed delivery is retried with exponential
// backoff (package backoff) a bounded number of times, on network errors,
// 5xx and 429 only. Receiver URLs may hold a token of their own (many
// webhook services put one in the path), so they are never logged: logs
// and the audit trail name the receiver.
//
// The configuration (Config, Parse, Load) is a HuJSON file, read strictly:
// unknown fields and duplicate keys are errors that name their line.
package alert
