// Package metrics defines every Prometheus metric agentmesh exports and
// serves them at /metrics in the Prometheus text format.
//
// Every metric is declared once, in the table Defs returns (name, type,
// help, labels): the README's table and the example dashboard and alerting
// rules are checked against it. A process makes one Set per node or
// coordinator, with a registry of its own (not Prometheus' global default),
// so that the demo and the tests can run several in one process; each Set
// also carries the Go runtime and process collectors.
//
// Recording is nil-safe: every method of a nil *Set records nothing, so a
// component built without metrics pays one nil check. Label values are
// bounded by construction: methods are mapped onto the MCP and model API's
// known methods (anything else is "other"), reasons are the reason package's
// codes, and the only per-identity label (the token counter's source) is
// capped (see capLabel); nothing is labelled per session, request or argument.
//
// Threat model of the endpoint: the counters say how busy a node is and why
// it refuses, which is an operator's business, not a peer's. Listen accepts
// only loopback addresses unless remote scrapes are allowed explicitly; the
// handler of a loopback listener refuses a Host that is not a loopback name
// (DNS rebinding: a web page on this machine could otherwise read it). The
// endpoint is never served on the mesh's mTLS listener.
package metrics
