package audit

import "time"

// Decision is whether the recorder let what the event describes happen.
// The empty Decision is for events that are not decisions.
type Decision string

// Decisions.
const (
	Allow Decision = "allow"
	Deny  Decision = "deny"
)

// Outcome is how what an event describes ended, with one value per
// situation: every gateway, tailnet front end and the coordinator give the
// same situation the same outcome, so a query for an outcome finds it
// wherever it happened. The empty Outcome is for events that need none (an
// admin action that was done, an integrity event).
//
//	situation                                                 decision  outcome
//	a client admitted (first request on a connection)         allow     accepted
//	a client not admitted: no or a bad certificate, an        deny      refused
//	  unknown, revoked or outdated identity, a stale view,
//	  no grant to the gateway, a refused tailnet caller, a
//	  refused TLS handshake, a connection bound (connlimit),
//	  a coordinator request without a valid certificate or
//	  admin identity, a join whose key does not allow it or
//	  that came too often
//	a request over a resource cap (requests in flight,        deny      refused
//	  sessions, processes, body budget, body deadline)
//	a request the policy denies (no grant covers it, a when   deny      denied
//	  is false or failed, an unknown method, a rate or token
//	  limit, a stream whose usage cannot be counted)
//	malformed, ambiguous or invalid input (bad JSON, a        deny      rejected
//	  batch, header/body mismatch, an unknown or another
//	  identity's session or task, a bad path, a body over
//	  its size, a bad join or admin request, an invalid
//	  policy)
//	a limit that applies but cannot be counted                deny      unavailable
//	the client went away before its request or answer was     any       client_gone
//	  whole
//	allowed; the upstream answered 2xx and the answer was     allow     ok
//	  passed on whole
//	allowed; the upstream answered 3xx or 4xx                 allow     client_error
//	allowed; the upstream could not be reached, failed,       allow     upstream_error
//	  answered 5xx or broke off its answer
//	allowed; a stdio upstream cannot serve a stateless        allow     unsupported
//	  request, answered with MCP's unsupported-version error
//	an answer in progress (a stream) the gateway ended: the   allow     stream_cut
//	  caller lost access, its session ended, the gateway
//	  stopped
//	a connection or session the gateway closed because its    deny      closed
//	  peer lost access
//	a session ended because nobody used it                    allow     expired
//	a call held for approval that the gateway answered with   allow     held
//	  input_required (MCP 2026-07-28): the client's retry
//	  has its own event with the decision
//
// The answer to an allowed request whose event cannot be recorded is
// withheld (reason audit_failed); no event carries it, since none could be
// written.
type Outcome string

// Outcomes; see Outcome for the situation each stands for.
const (
	OutcomeAccepted      Outcome = "accepted"
	OutcomeRefused       Outcome = "refused"
	OutcomeDenied        Outcome = "denied"
	OutcomeRejected      Outcome = "rejected"
	OutcomeUnavailable   Outcome = "unavailable"
	OutcomeClientGone    Outcome = "client_gone"
	OutcomeOK            Outcome = "ok"
	OutcomeClientError   Outcome = "client_error"
	OutcomeUpstreamError Outcome = "upstream_error"
	OutcomeUnsupported   Outcome = "unsupported"
	OutcomeStreamCut     Outcome = "stream_cut"
	OutcomeClosed        Outcome = "closed"
	OutcomeExpired       Outcome = "expired"
	OutcomeHeld          Outcome = "held"
)

// OutcomeOfStatus is the outcome of an allowed request whose upstream
// answered with HTTP status: ok below 300, client_error below 500,
// upstream_error from 500.
func OutcomeOfStatus(status int) Outcome {
	switch {
	case status < 300:
		return OutcomeOK
	case status < 500:
		return OutcomeClientError
	}
	return OutcomeUpstreamError
}

// Stamp fills in what every event carries and its recorder does not
// choose: the schema version, a fresh id unless it has one, and the time
// from now (the recorder's injected clock, in UTC) unless it has one. Every
// path that records an event (gateways, refusal aggregation, the
// coordinator) stamps it here, once, before it is written.
func (e *Event) Stamp(now time.Time) {
	e.V = SchemaVersion
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = now.UTC()
	}
}
