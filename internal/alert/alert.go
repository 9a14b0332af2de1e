package alert

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Version is the version of the payload's JSON encoding, sent in every
// alert as "v".
const Version = 1

// Kind names what an alert is about.
type Kind string

// Alert kinds. README's "Alerts" section says when each fires.
const (
	// Denials: one source was denied more often than the threshold
	// within the sliding window.
	Denials Kind = "denials"
	// RefusedIdentity: an identity, or an unidentified address, was
	// refused or denied for the first time.
	RefusedIdentity Kind = "refused_identity"
	// RenewalFailing: a node's certificate is within the renewal margin
	// of its expiry and the node has not renewed it.
	RenewalFailing Kind = "renewal_failing"
	// SpoolBacklog: a node shipped audit events much older than their
	// arrival: its spool is backing up, or it was cut off.
	SpoolBacklog Kind = "spool_backlog"
	// AuditVerify: a verification of the audit trail found a problem.
	AuditVerify Kind = "audit_verify"
	// ToolChanged: a tool's definition differs from the one pinned.
	// The coordinator raises it from a gateway's tool_changed audit event.
	ToolChanged Kind = "tool_changed"
)

// Test is the kind of the alert 'agentmesh alerts check --send-test'
// sends to every receiver, whatever kinds it gets, to try the webhook
// and its signature check. The coordinator never raises it, and it is
// not a kind a receiver can list.
const Test Kind = "test"

// Kinds lists every kind a receiver can list.
var Kinds = []Kind{Denials, RefusedIdentity, RenewalFailing, SpoolBacklog, AuditVerify, ToolChanged}

// ParseKind returns the kind s names, or an error that lists the kinds.
func ParseKind(s string) (Kind, error) {
	if k := Kind(s); slices.Contains(Kinds, k) {
		return k, nil
	}
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown alert kind %q: want one of %s", s, strings.Join(names, ", "))
}

// Alert is one alert, as receivers get it (JSON).
type Alert struct {
	V int `json:"v"`
	// ID is random and stays the same across every delivery attempt and
	// every receiver of this alert.
	ID   string    `json:"id"`
	Kind Kind      `json:"kind"`
	Time time.Time `json:"time"`
	// Coordinator is the URL of the coordinator that sent it.
	Coordinator string `json:"coordinator"`
	// Subject is what the alert is about: an identity, an address
	// ("addr:IP"), a node name, "audit".
	Subject string `json:"subject"`
	// Summary is one line for people.
	Summary string `json:"summary"`
	// Details are the alert's figures, by name; each kind's are listed in
	// README. Only numbers, names and times: never a secret or an
	// argument value.
	Details map[string]any `json:"details,omitempty"`

	// Window, with Kind and Subject, is the alert's claim key: coordinators
	// sharing a database send one alert per key (the first to claim it).
	// "" means once ever. It is not sent.
	Window string `json:"-"`
}

// maxSubject bounds a subject: it may come from a peer (an address).
const maxSubject = 256

// New returns an alert of kind about subject, at now, with a fresh id.
func New(kind Kind, subject, summary string, now time.Time) Alert {
	if len(subject) > maxSubject {
		subject = subject[:maxSubject]
	}
	return Alert{V: Version, ID: newID(), Kind: kind, Time: now.UTC(), Subject: subject, Summary: summary, Details: map[string]any{}}
}

// ToolChangedAlert is the tool_changed alert: the definition of tool on
// the service node changed from the digest pinned (oldDigest) to
// newDigest. Its window is newDigest, so each new definition alerts once.
func ToolChangedAlert(node, tool, oldDigest, newDigest string, now time.Time) Alert {
	a := New(ToolChanged, node+"/"+tool, fmt.Sprintf("tool %s on %s changed its definition", tool, node), now)
	a.Details["node"], a.Details["tool"] = node, tool
	a.Details["pinned_sha256"], a.Details["new_sha256"] = oldDigest, newDigest
	a.Window = newDigest
	return a
}

// Marshal is the alert's body as sent.
func (a Alert) Marshal() ([]byte, error) { return json.Marshal(a) }

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("alert: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
