// Package controlapi defines the coordinator's HTTP API: paths and the JSON
// bodies that the coordinator and its clients exchange. Both sides decode
// strictly (unknown fields are errors) and bound body sizes.
//
// Authentication is by TLS 1.3 client certificate on every path but Join,
// which is authenticated by an auth key instead and happens over a
// connection whose server certificate the client pinned by CA fingerprint.
package controlapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

// API paths.
const (
	PathJoin     = "/v1/join"
	PathRenew    = "/v1/renew"
	PathNetmap   = "/v1/netmap"   // GET ?since=VERSION long-polls for a newer netmap
	PathRegister = "/v1/register" // a serving node announces its addresses
	PathAudit    = "/v1/audit"    // POST: ship a batch of events; GET: query (admin)
	PathVerify   = "/v1/audit/verify"
	PathKeys     = "/v1/keys"
	PathSSO      = "/v1/sso"
	PathLogin    = "/v1/login"
	PathNodes    = "/v1/nodes"
	PathPolicy   = "/v1/policy"
	PathHistory  = "/v1/policy/history"
	PathRollback = "/v1/policy/rollback"
	// PathTools: POST, a tool node reports the tool definitions its
	// gateway sees (ToolReport); GET, the definitions every gateway has
	// reported (admin; ?service=NAME narrows; []ToolSeen).
	PathTools = "/v1/tools"
)

// MaxBody bounds every request body the coordinator reads.
const MaxBody = 1 << 20

// MaxJoinBody bounds a join request, which anybody may send: a key, a
// name and a certificate request fit in a few hundred bytes; a person's
// ID token ('join --sso', 'login') in at most 16 KiB more.
const MaxJoinBody = 24 << 10

// MaxAuditBody bounds an audit batch.
const MaxAuditBody = 16 << 20

// AuditIngestResponse answers a shipped batch (POST PathAudit). It
// accounts for every event of the batch: Added + Duplicates +
// len(Conflicts) == Received.
type AuditIngestResponse struct {
	Received int `json:"received"`
	// Added is how many events were stored as new.
	Added int `json:"added"`
	// Duplicates is how many were stored already with identical content
	// (a batch sent again after a lost answer).
	Duplicates int `json:"duplicates"`
	// Conflicts are events whose (dst, id) was stored already with other
	// content: each is kept in an integrity event, and flagged.
	Conflicts []audit.Conflict `json:"conflicts,omitempty"`
	// Receipt is the chain's head after the batch, signed, and bound to
	// the batch's content (audit.Receipt.CheckBatch): the node checks it
	// before it forgets the batch, and keeps the newest one, so that
	// deleting or altering the events it covers in the coordinator's
	// database is detected (agentmesh audit verify --receipt).
	Receipt audit.Receipt `json:"receipt"`
}

// VerifyRequest is the body of POST PathVerify: receipts that nodes kept,
// checked against the chain with the stored checkpoints. GET PathVerify
// verifies without receipts. The answer is an audit.Report.
type VerifyRequest struct {
	Receipts []audit.Receipt `json:"receipts"`
}

// JoinRequest asks for a first certificate.
type JoinRequest struct {
	KeyID  string `json:"key_id"`
	Secret string `json:"secret"`
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	// CSR is a PEM certificate request signed by the node's own key.
	CSR string `json:"csr"`
	// IDToken, instead of an auth key, joins as a person signed in
	// through the coordinator's OpenID Connect issuer ('join --sso');
	// Tags are then the tags asked for, which the policy's node_owners
	// must let the person give.
	IDToken string   `json:"id_token,omitempty"`
	Tags    []string `json:"tags,omitempty"`
}

// SSOInfo is what the coordinator tells anyone about its OpenID Connect
// issuer, for 'agentmesh login' to sign in with (nothing secret).
type SSOInfo struct {
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
}

// LoginRequest presents a person's ID token and a CSR for their key.
type LoginRequest struct {
	IDToken string `json:"id_token"`
	CSR     string `json:"csr"`
}

// LoginResponse carries the person's certificate.
type LoginResponse struct {
	Certificate string   `json:"certificate"` // PEM
	CABundle    string   `json:"ca_bundle"`   // PEM
	User        string   `json:"user"`        // the e-mail address
	Groups      []string `json:"groups"`
	// Admin says whether the person's groups give admin rights.
	Admin bool `json:"admin"`
}

// CertResponse carries an issued certificate.
type CertResponse struct {
	Certificate string         `json:"certificate"` // PEM
	CABundle    string         `json:"ca_bundle"`   // PEM
	Netmap      *netmap.Netmap `json:"netmap,omitempty"`
}

// RenewRequest asks for a fresh certificate for the caller's own identity.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// Bounds on a ToolReport: a gateway reports at most MaxReportTools
// definitions of at most MaxReportBytes in all (canonical JSON).
const (
	MaxReportTools = 1000
	MaxReportBytes = 4 << 20
)

// ToolReport is what a tool node's gateway reports: the latest definition
// of every tool it has seen its upstream list. It replaces the node's
// previous report; definitions it no longer holds stay on record as not
// current.
type ToolReport struct {
	Tools []ReportedTool `json:"tools"`
}

// ReportedTool is one tool definition: its name, hash ("sha256:<hex>",
// package toolpin) and canonical JSON.
type ReportedTool struct {
	Name       string          `json:"name"`
	Hash       string          `json:"hash"`
	Definition json.RawMessage `json:"definition"`
}

// ToolSeen is a tool definition a service's gateway reported.
type ToolSeen struct {
	Service    string          `json:"service"`
	Name       string          `json:"name"`
	Hash       string          `json:"hash"`
	Definition json.RawMessage `json:"definition"`
	// Current says the gateway's latest report holds this definition.
	Current   bool      `json:"current"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// RegisterRequest announces where a serving node can be reached.
type RegisterRequest struct {
	Addrs []string `json:"addrs"`
}

// KeyCreateRequest creates an auth key.
type KeyCreateRequest struct {
	Kind     string        `json:"kind"`
	Tags     []string      `json:"tags"`
	Reusable bool          `json:"reusable"`
	Expiry   time.Duration `json:"expiry"`
	// Name, when set, is the only name a node may join as with the key.
	Name string `json:"name,omitempty"`
}

// KeyCreateResponse returns the new key, once; it cannot be read again.
type KeyCreateResponse struct {
	Key  string  `json:"key"`
	Info KeyInfo `json:"info"`
}

// KeyInfo describes an auth key without its secret.
type KeyInfo struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Tags      []string  `json:"tags"`
	Reusable  bool      `json:"reusable"`
	Uses      int       `json:"uses"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked"`
	CreatedBy string    `json:"created_by"`
	// Name is the only name the key admits; "" admits any free name.
	Name string `json:"name,omitempty"`
}

// TagRequest replaces a node's tags.
type TagRequest struct {
	Tags []string `json:"tags"`
}

// PolicyApplyRequest applies a policy document.
type PolicyApplyRequest struct {
	Document string `json:"document"`
}

// PolicyVersion describes one applied policy version.
type PolicyVersion struct {
	Version   int64     `json:"version"`
	AppliedAt time.Time `json:"applied_at"`
	AppliedBy string    `json:"applied_by"`
	Document  string    `json:"document,omitempty"`
	Note      string    `json:"note,omitempty"`
}

// RollbackRequest re-applies an earlier version as a new version.
type RollbackRequest struct {
	Version int64 `json:"version"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	// Code is a stable machine-readable code such as "key_expired".
	Code string `json:"code"`
}

// Decode reads one JSON value from r strictly into v, reading at most max
// bytes. Unknown fields and trailing data are errors.
func Decode(r io.Reader, max int64, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > max {
		return fmt.Errorf("body larger than %d bytes", max)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

// NodeInfo is one row of the node listing.
type NodeInfo struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`
	ID     string   `json:"id"`
	Tags   []string `json:"tags"`
	Status string   `json:"status"`
	Addrs  []string `json:"addrs,omitempty"`
	// Serving is whether a tool or model node serves now: an address
	// registered and its netmap watched within the last long poll and a
	// margin (the coordinator's rule); false for every other node.
	Serving  bool      `json:"serving"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Created  time.Time `json:"created"`
	// CertExpires is when the certificate a coordinator last issued to
	// the node (at its join or a renewal) lapses; zero when none was
	// recorded (a node that has not renewed since the coordinator began
	// recording it).
	CertExpires time.Time `json:"cert_expires,omitzero"`
	// Owner is the person (an e-mail address) who joined the node with
	// 'join --sso'; "" for a node joined with an auth key.
	Owner string `json:"owner,omitempty"`
}
