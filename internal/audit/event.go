package audit

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// SchemaVersion is the version of Event's JSON encoding. It is written into
// every event so that readers can tell encodings apart.
const SchemaVersion = 1

// Kind is the type of an audit event.
type Kind string

// Event kinds.
const (
	KindConnection Kind = "connection" // a connection attempt, accepted or refused
	KindRequest    Kind = "request"    // a decision on one MCP message or HTTP request
	KindAdmin      Kind = "admin"      // an admin action at the coordinator
	KindSession    Kind = "session"    // a session opened, closed or cut off
	// KindIntegrity is a security event about the trail itself, recorded
	// by the coordinator: a node shipped an event it may not record
	// (reason foreign_event) or shipped different content under an id
	// already stored (reason id_conflict). Nodes cannot ship it.
	KindIntegrity Kind = "integrity"
)

// Kinds lists every event kind.
var Kinds = []Kind{KindConnection, KindRequest, KindAdmin, KindSession, KindIntegrity}

// ParseKind returns the kind s names, or an error that lists the kinds.
func ParseKind(s string) (Kind, error) {
	if k := Kind(s); slices.Contains(Kinds, k) {
		return k, nil
	}
	names := make([]string, len(Kinds))
	for i, k := range Kinds {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown event kind %q: want one of %s", s, strings.Join(names, ", "))
}

// Reasons of integrity events, kept under these names for the store and
// verify code that matches on them.
const (
	// ReasonIDConflict is reason.IDConflict: an event arrived under a
	// (dst, id) already stored with different content. The new content is
	// kept in the integrity event (see Conflict); the stored event is left
	// as it was.
	ReasonIDConflict = reason.IDConflict
	// ReasonForeignEvent is reason.ForeignEvent: a node shipped a batch
	// with an event it did not decide (another destination, or a kind
	// nodes do not record); the whole batch was refused.
	ReasonForeignEvent = reason.ForeignEvent
)

// Event is one audit record. Fields that do not apply are left empty.
type Event struct {
	// V is the encoding version, SchemaVersion for events written by this
	// code.
	V int `json:"v"`
	// Seq is the event's position in the coordinator's hash chain. The
	// store assigns it; it is zero in events that have not been stored
	// (in the spool, on the wire to the coordinator) and it is not part of
	// the canonical encoding, so a sender cannot choose it.
	Seq  int64     `json:"seq,omitempty"`
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Src is the acting identity (a SPIFFE ID, or a tailnet identity), or
	// "" when the peer could not be identified.
	Src     string `json:"src,omitempty"`
	SrcAddr string `json:"src_addr,omitempty"`
	// Dst is the identity of the node that made the decision or was the
	// target of the action.
	Dst      string `json:"dst,omitempty"`
	Method   string `json:"method,omitempty"`
	Tool     string `json:"tool,omitempty"`
	Resource string `json:"resource,omitempty"`
	Prompt   string `json:"prompt,omitempty"`
	Model    string `json:"model,omitempty"`
	// Action names an admin action ("keys.create", "nodes.revoke", ...).
	Action string `json:"action,omitempty"`
	// Target is what an admin action acted on (a key id, a node name).
	Target        string      `json:"target,omitempty"`
	Decision      Decision    `json:"decision,omitempty"`
	Reason        reason.Code `json:"reason,omitempty"`
	Rule          string      `json:"rule,omitempty"`
	PolicyVersion string      `json:"policy_version,omitempty"`
	Session       string      `json:"session,omitempty"`
	LatencyUS     int64       `json:"latency_us,omitempty"`
	Outcome       Outcome     `json:"outcome,omitempty"`
	// ArgsSHA256 is the hex SHA-256 of a tool call's arguments, set only when
	// the gateway is configured to record it; arguments themselves are never
	// stored.
	ArgsSHA256 string `json:"args_sha256,omitempty"`
	// Detail carries action-specific text, such as a policy diff.
	Detail string `json:"detail,omitempty"`
	// Usage records model token usage, when the response reported it.
	Usage *Usage `json:"usage,omitempty"`
	// TTFBUS is the time to the first byte of the upstream's response, in
	// microseconds, for proxied HTTP requests (model endpoints).
	TTFBUS int64 `json:"ttfb_us,omitempty"`
	// Status is the HTTP status answered to the client, for HTTP requests
	// (model endpoints); 0 when not applicable.
	Status int `json:"status,omitempty"`
	// Count, when not zero, is how many attempts this one event accounts
	// for: refusals aggregated over a window (see Refusals), from First to
	// Time. Zero means the event is one attempt, as every event that is
	// not an aggregate.
	Count int64 `json:"count,omitempty"`
	// First is the time of the first attempt an aggregate (Count > 0)
	// accounts for; Time is the last one's. Zero otherwise.
	First time.Time `json:"first,omitzero"`
	// Basis is what the policy decision of a request event depended on,
	// kept so that the decision can be made again (see Basis); nil for
	// every other event, and for events recorded before gateways kept it.
	Basis *Basis `json:"basis,omitempty"`
	// Shadow, on a request event, is the shadow policy's decision when it
	// differs from the active one (shadow.go); nil otherwise.
	Shadow *ShadowDecision `json:"shadow,omitempty"`
	// User is the person behind the caller, the same on both transports:
	// the login tailnet WhoIs reports for a person's device, or the owner
	// the coordinator's registry holds for a mesh node joined with
	// `agentmesh join --sso`; in lower case, as user:LOGIN selectors
	// match it (policy.Node.User). "" when the caller has none (a node
	// joined with an auth key, a tagged tailnet device), when it could not
	// be identified, and in events recorded before gateways kept it.
	// Never taken from the peer.
	User string `json:"user,omitempty"`
	// OnBehalfOf, on an event of a request made with a delegation, is
	// for whom the caller acted (onbehalf.go); nil otherwise.
	OnBehalfOf *OnBehalfOf `json:"on_behalf_of,omitempty"`
}

// Attempts is how many attempts e accounts for: Count, or 1 for an event
// that is not an aggregate.
func (e *Event) Attempts() int64 { return max(e.Count, 1) }

// Usage is the token usage of one model request.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// NewID returns a fresh random event id: 128 bits, hex encoded. Ids make
// delivery idempotent, so they must never repeat.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("audit: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
