// Package netmap defines the versioned view of the mesh that the coordinator
// distributes to every running node: the trust bundle, the audit checkpoint
// key, the nodes it needs to know with their kinds, tags, served addresses
// and status, and the rules it enforces.
//
// Need to know: each node gets its own view, built for it on every request.
// A gateway (tool or model node) gets itself, the peers whose connections
// the policy may admit (with the tags and incarnation it checks), and the
// projection of the policy it enforces (policy.Projection: the grants and
// limits whose dst selects it, no tests, no comments). A node gets the
// services it may reach, with their addresses, and never the policy. Admin
// nodes use the admin API instead. Only the version number is shared: it
// changes whenever anything in the mesh does.
//
// Typed once, at decode: a node's ID, kind, name, tags and status are
// identity and netmap types, parsed when the netmap is decoded (Decode,
// Node.UnmarshalJSON). A node entry that does not parse, or whose parts do
// not agree, fails the whole decode with an error that names it; nothing
// downstream parses a node's strings again, and no node is skipped
// silently. The JSON wire format is unchanged: every field is a string.
//
// Threat model: the netmap is what a gateway admits peers by, so a node
// that decodes with a name its identity does not carry (a key spelled in
// another case, an id of another node) would be a peer its lookups find
// under the wrong name; Decode refuses such an entry rather than dropping
// it, so the node keeps the last good netmap and says why. The netmap
// comes over mTLS from the coordinator, or from the node's own cache.
//
// A Netmap is a value: the coordinator builds a new one for each change and
// nodes swap the one they hold atomically. Nodes cache the last one in their
// state directory so that they keep enforcing it while the coordinator is
// unreachable, within the limit Fresh sets.
package netmap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// Status is a node's registration status.
type Status string

// Node status values.
const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
)

// ParseStatus returns the Status s names, or an error for anything else.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusActive, StatusRevoked:
		return st, nil
	}
	return "", fmt.Errorf("status %q is neither active nor revoked", s)
}

// Node is one registered node. Its identifying fields are typed: decoding
// parses them once (see UnmarshalJSON) and refuses an entry that does not
// parse, so nothing downstream parses a node's strings again or has to
// skip a node it cannot read. On the wire every field is a string (or a
// list of strings), as before.
type Node struct {
	// ID is the node's SPIFFE ID; its kind and name are Kind and Name.
	ID   identity.ID
	Name identity.Name
	Kind identity.Kind
	// Tags are the node's tags; empty, never nil, in a decoded node.
	Tags []identity.Tag
	// Addrs are the host:port addresses a serving node is reachable on.
	Addrs  []string
	Status Status
	// Incarnation distinguishes successive nodes that held the same name:
	// it is written into every certificate issued to the node, and a
	// certificate whose incarnation is not the active node's is refused.
	// A service listed for a node to reach comes without one.
	Incarnation string
	LastSeen    time.Time
	// Owner is the person who joined the node with `agentmesh join
	// --sso`, as the coordinator's registry recorded it (never as the
	// node says), in canonical form (identity.ParseUser); "" for a node
	// joined with an auth key. A gateway gets it for its peers, so that
	// user:EMAIL selectors match them and its audit names the person
	// behind a call; a node listed only as a service to reach comes
	// without it. On the wire it is "owner", left out when empty, so a
	// netmap without owners reads as before; a node older than the field
	// decodes strictly and refuses a netmap that names an owner.
	Owner identity.User
}

// PolicyNode is n as the policy sees it: kind, name, tags and the user
// who owns it (Owner).
func (n Node) PolicyNode() policy.Node {
	return policy.Node{Kind: n.Kind, Name: n.Name, Tags: n.Tags, User: string(n.Owner)}
}

// wireNode is a Node as JSON carries it.
type wireNode struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	Tags        []string  `json:"tags"`
	Addrs       []string  `json:"addrs,omitempty"`
	Status      string    `json:"status"`
	Incarnation string    `json:"incarnation"`
	LastSeen    time.Time `json:"last_seen,omitzero"`
	Owner       string    `json:"owner,omitempty"`
}

// MarshalJSON writes n in the wire format: its typed fields as strings.
func (n Node) MarshalJSON() ([]byte, error) {
	tags := make([]string, len(n.Tags))
	for i, t := range n.Tags {
		tags[i] = string(t)
	}
	return json.Marshal(wireNode{
		ID: n.ID.String(), Name: string(n.Name), Kind: string(n.Kind), Tags: tags,
		Addrs: n.Addrs, Status: string(n.Status), Incarnation: n.Incarnation, LastSeen: n.LastSeen,
		Owner: string(n.Owner),
	})
}

// UnmarshalJSON reads a node entry strictly (unknown fields and trailing
// data are errors) and parses every identifying field: the ID, kind, name,
// tags and status must be valid, and the ID must be the one of that kind
// and name. (That it lies in the netmap's trust domain is Validate's
// check.) An entry that does not parse fails the whole decode.
func (n *Node) UnmarshalJSON(b []byte) error {
	var w wireNode
	if err := decodeStrict(b, &w); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	parsed, err := w.parse()
	if err != nil {
		return fmt.Errorf("node %.80q: %w", w.Name, err)
	}
	*n = parsed
	return nil
}

// parse turns a wire node into a Node, or says what does not parse.
func (w *wireNode) parse() (Node, error) {
	id, err := identity.Parse(w.ID)
	if err != nil {
		return Node{}, err
	}
	kind, err := identity.ParseKind(w.Kind)
	if err != nil {
		return Node{}, err
	}
	name, err := identity.ParseName(w.Name)
	if err != nil {
		return Node{}, err
	}
	if id.Kind != kind || id.Name != name {
		return Node{}, fmt.Errorf("id %q is not the id of %s %s", w.ID, kind, name)
	}
	tags, err := identity.ParseTags(w.Tags)
	if err != nil {
		return Node{}, err
	}
	status, err := ParseStatus(w.Status)
	if err != nil {
		return Node{}, err
	}
	owner, err := ParseOwner(w.Owner)
	if err != nil {
		return Node{}, err
	}
	return Node{ID: id, Name: name, Kind: kind, Tags: tags, Addrs: w.Addrs, Status: status,
		Incarnation: w.Incarnation, LastSeen: w.LastSeen, Owner: owner}, nil
}

// ParseOwner reads a node's owner: "" or a user name in its canonical
// spelling. Another spelling of a person (upper case) is refused, not
// folded: the coordinator writes only the canonical one, so anything else
// did not come from it as it is.
func ParseOwner(s string) (identity.User, error) {
	if s == "" {
		return "", nil
	}
	u, err := identity.ParseUser(s)
	if err != nil {
		return "", fmt.Errorf("owner: %w", err)
	}
	if string(u) != s {
		return "", fmt.Errorf("owner %q is not in canonical form (%q)", s, u)
	}
	return u, nil
}

// Policy is the policy a gateway enforces: the projection for it of the
// document in force (version 0 when no policy was applied, which denies
// everything), or, without Grants and Limits, a whole document.
type Policy struct {
	Version  int64  `json:"version"`
	Document string `json:"document"`
	// Grants and Limits number a projection's grants and limits as the
	// whole document does (see policy.Projection), so that decisions and
	// rate-limit counters read the same everywhere.
	Grants []int             `json:"grants,omitempty"`
	Limits []policy.LimitRef `json:"limits,omitempty"`
}

// Projected reports whether p is a projection rather than a whole
// document.
func (p Policy) Projected() bool { return p.Grants != nil || p.Limits != nil }

// Netmap is one version of the mesh's state, as one node needs it.
type Netmap struct {
	Version     int64                `json:"version"`
	TrustDomain identity.TrustDomain `json:"trust_domain"`
	// CABundle holds the PEM certificates that node certificates chain to.
	CABundle string `json:"ca_bundle"`
	// AuditKey is the PEM public key that signs audit checkpoints.
	AuditKey string `json:"audit_key,omitempty"`
	// CertTTL is the lifetime of the mesh's node certificates: how long a
	// view may go without the coordinator confirming it (see Fresh).
	CertTTL time.Duration `json:"cert_ttl,omitempty"`
	// IssuedAt is when the coordinator built this answer, by its clock.
	IssuedAt time.Time `json:"issued_at,omitzero"`
	Nodes    []Node    `json:"nodes"`
	Policy   Policy    `json:"policy"`
	// Shadow is the shadow policy (`agentmesh policy shadow`), projected
	// for a gateway as Policy is: evaluated next to Policy on every
	// request, never enforced, its differing decisions recorded. Nil when
	// there is none, and for nodes that do not serve.
	Shadow *Policy `json:"shadow,omitempty"`
	// Coordinators are the API URLs of every live coordinator of the
	// mesh, sorted and without duplicates (CheckCoordinators): a node
	// fails over between them, and learns of new ones and forgets
	// removed ones from each netmap. Empty from a coordinator that
	// predates the list: the node keeps the one it joined through.
	Coordinators []string `json:"coordinators,omitempty"`
	// RevokedDelegations and RevokedUsers are what a gateway refuses in a
	// delegation (package delegation): revoked delegation IDs and people
	// whose delegations are revoked, each listed until every delegation it
	// could affect has expired, so the lists stay short. Empty for nodes
	// that do not serve.
	RevokedDelegations []string `json:"revoked_delegations,omitempty"`
	RevokedUsers       []string `json:"revoked_users,omitempty"`
	// Delegations are the live delegations issued to this node (encoded,
	// as delegation.Sign makes them), for its connector to present; only
	// in the netmap of the agent they are issued to.
	Delegations []string `json:"delegations,omitempty"`
}

// Bounds of the delegation lists: a netmap is a peer's bytes.
const (
	MaxRevocations = 1 << 16
	MaxDelegations = 256
)

// Bounds of Netmap.Coordinators: a netmap is a peer's bytes, so the list
// a node keeps (and saves) is bounded in count and in size.
const (
	MaxCoordinators      = 64
	MaxCoordinatorURLLen = 256
)

// CheckCoordinatorURL reports whether s is a coordinator API URL in the
// one spelling nodes use: "https://" and a lower-case HOST[:PORT], nothing
// else (no user, path, query or fragment), at most MaxCoordinatorURLLen
// bytes. API paths are appended to it as they are, and one coordinator
// spelled two ways would be two entries of a list.
func CheckCoordinatorURL(s string) error {
	if len(s) > MaxCoordinatorURLLen {
		return fmt.Errorf("coordinator URL %.40q… is longer than %d bytes", s, MaxCoordinatorURLLen)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || s != "https://"+u.Host || u.Host != strings.ToLower(u.Host) {
		return fmt.Errorf("coordinator URL %q is not https://HOST:PORT", s)
	}
	return nil
}

// CheckCoordinators reports whether urls is a valid coordinator list: at
// most MaxCoordinators valid URLs (CheckCoordinatorURL), sorted, no
// duplicates (the canonical form Coordinators and SortCoordinators use).
func CheckCoordinators(urls []string) error {
	if len(urls) > MaxCoordinators {
		return fmt.Errorf("%d coordinators, more than %d", len(urls), MaxCoordinators)
	}
	for i, u := range urls {
		if err := CheckCoordinatorURL(u); err != nil {
			return err
		}
		if i > 0 && urls[i-1] >= u {
			return fmt.Errorf("coordinators are not sorted and distinct: %q before %q", urls[i-1], u)
		}
	}
	return nil
}

// SortCoordinators returns urls sorted, without duplicates, in a new
// slice: the canonical form of a coordinator list.
func SortCoordinators(urls []string) []string {
	out := slices.Clone(urls)
	slices.Sort(out)
	return slices.Compact(out)
}

// Fresh reports whether a view of m that the coordinator last confirmed
// at confirmed (by the node's clock: an answer with a netmap, or a long
// poll's "nothing new") may still admit anybody at now.
//
// The rule: a view not confirmed for longer than one certificate lifetime
// admits nobody, until the coordinator answers again. A gateway that cannot
// hear from the coordinator (it is down, or the gateway restarted from its
// cache while it was) otherwise acts on grants, tags and peers that may
// since have changed. Within the window, a node revoked meanwhile is
// admitted at most until its certificate expires (it can no longer renew),
// the same bound as passive revocation, and a grant removed meanwhile
// holds at most one lifetime past the last confirmation. Past the window
// the gateway fails closed. A view never confirmed, a netmap without a
// lifetime, or a confirmation further in the future than the
// certificates' clock skew allowance (the clock went back) is not fresh.
func (m *Netmap) Fresh(confirmed, now time.Time) bool {
	if m == nil || confirmed.IsZero() || m.CertTTL <= 0 {
		return false
	}
	age := now.Sub(confirmed)
	return age <= m.CertTTL && age >= -clockSkew
}

// clockSkew is how far a confirmation may lie in the future: what
// certificates allow (pki.ClockSkew).
const clockSkew = time.Minute

// Node returns the node named name, if the netmap has it: the active one
// when there is one (a gateway's view may also list revoked registrations
// of the name), else a revoked one.
func (m *Netmap) Node(name identity.Name) (Node, bool) {
	if m == nil {
		return Node{}, false
	}
	var found Node
	ok := false
	for _, n := range m.Nodes {
		if n.Name != name {
			continue
		}
		if n.Status == StatusActive {
			return n, true
		}
		found, ok = n, true
	}
	return found, ok
}

// Decode parses a netmap strictly: unknown fields are errors, and so is a
// node entry that does not parse or does not hold together (see
// Node.UnmarshalJSON and Validate), so that nothing downstream sees a name
// its identity does not carry, or has to skip a node.
func Decode(b []byte) (*Netmap, error) {
	var m Netmap
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("netmap: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the coordinator list (CheckCoordinators) and that
// every node entry holds together: a valid name,
// kind, tags and status, and an ID that is exactly the SPIFFE ID of that
// kind and name in the netmap's trust domain. Decode calls it; a netmap
// built in code can be checked with it before it is sent. (encoding/json
// matches keys without regard to case, so a field may arrive under
// another spelling; the entry must still be consistent.)
func (m *Netmap) Validate() error {
	if err := CheckCoordinators(m.Coordinators); err != nil {
		return fmt.Errorf("netmap: %w", err)
	}
	if err := m.checkDelegationLists(); err != nil {
		return err
	}
	td, err := identity.ParseTrustDomain(string(m.TrustDomain))
	if err != nil && len(m.Nodes) > 0 {
		return fmt.Errorf("netmap: %w", err)
	}
	for i, n := range m.Nodes {
		if err := n.validate(td); err != nil {
			return fmt.Errorf("netmap: node %d (%.80q): %w", i, n.Name, err)
		}
	}
	return nil
}

// validate checks n's typed fields as decoding would have, and that its ID
// lies in the trust domain td.
func (n *Node) validate(td identity.TrustDomain) error {
	id, err := identity.New(td, n.Kind, n.Name)
	if err != nil {
		return err
	}
	if n.ID != id {
		return fmt.Errorf("id %q is not %s", n.ID, id)
	}
	tags := make([]string, len(n.Tags))
	for i, t := range n.Tags {
		tags[i] = string(t)
	}
	parsed, err := identity.ParseTags(tags)
	if err != nil {
		return err
	}
	if !slices.Equal(parsed, n.Tags) {
		return fmt.Errorf("tags %q are not in canonical form", tags)
	}
	if _, err := ParseStatus(string(n.Status)); err != nil {
		return err
	}
	_, err = ParseOwner(string(n.Owner))
	return err
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
