// Package delegation is how an agent acts on a person's behalf: a
// delegation is a statement, signed by the coordinator with the mesh CA key
// (pki.SignStatement), that a person (or an agent acting for one) lets one
// agent node act for them, within a scope, until a time.
//
// A delegation is bound to the agent's identity and incarnation, which
// its certificate carries: a gateway accepts it only from the mTLS peer it
// was issued to (Verify's Peer and Incarnation), so a copy is useless to
// any other node, and useless to the same name joined again. It is not a
// bearer token: presenting it proves nothing; the peer's certificate does.
//
// A delegation may be made from another (agent to sub-agent): its Chain
// lists every link from the person down to the agent it is issued to, each
// with its own ID, so revoking any link (or the person) revokes every
// delegation made from it, and the depth is visible to the policy and in
// the audit trail. MaxDepth bounds it.
//
// Threat model: a hostile member may present any bytes as a delegation.
// Decode bounds the size (MaxTokenBytes) and refuses anything that does not
// decode strictly; Verify checks the signature before it reads a claim, then
// the trust domain, the binding to the peer, the time (with a clock skew
// bound) and the shape of the chain. What the delegation allows is decided
// by the policy, never by the delegation alone: its scope only narrows.
package delegation

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Bounds.
const (
	// MaxDepth is the longest chain: a person, an agent and up to three
	// sub-agents below it.
	MaxDepth = 4
	// MaxTTL is the longest a delegation may be valid.
	MaxTTL = 24 * time.Hour
	// MinTTL is the shortest.
	MinTTL = time.Minute
	// MaxTools is the most tool entries a scope may list.
	MaxTools = 64
	// MaxTokenBytes bounds an encoded delegation (a header value).
	MaxTokenBytes = 8 << 10
	// DefaultSkew is the clock skew allowed when none is configured.
	DefaultSkew = time.Minute
)

// Header is the HTTP request header that carries a delegation from the
// connector to a gateway.
const Header = "Agentmesh-Delegation"

// purpose is the statement purpose the CA signs delegations under.
const purpose = "delegation/v1"

// tokenPrefix opens every encoded delegation, naming its version.
const tokenPrefix = "amd1."

// Link is one step of a chain: By lets To act for the person.
type Link struct {
	// ID names this delegation: 32 lowercase hex digits, unique.
	ID string `json:"id"`
	// By is the grantor: "user:EMAIL" for the first link, the SPIFFE ID of
	// the previous link's To for every other.
	By string `json:"by"`
	// To is the SPIFFE ID of the agent the link is issued to.
	To string `json:"to"`
}

// Claims is what a delegation says. The last link is the delegation
// itself; the ones before it are those it was made from.
type Claims struct {
	// V is the format version, 1.
	V int `json:"v"`
	// TrustDomain is the mesh the delegation is valid in.
	TrustDomain string `json:"td"`
	// User is the person at the root of the chain (canonical e-mail).
	User string `json:"user"`
	// Chain runs from the person's delegation to this one.
	Chain []Link `json:"chain"`
	// Incarnation is the incarnation of the certificate of the agent the
	// last link is issued to (pki.Incarnation).
	Incarnation string `json:"inc"`
	// Tools narrows the delegation to tool calls (and lists) of these
	// entries, "SERVICE/TOOL" with the policy's glob syntax in TOOL (see
	// the policy package); empty means every tool the policy lets both the
	// grantor and the agent use.
	Tools []string `json:"tools,omitempty"`
	// IssuedAt and Expires are Unix seconds.
	IssuedAt int64 `json:"iat"`
	Expires  int64 `json:"exp"`
}

// ID is the delegation's own ID, the last link's.
func (c *Claims) ID() string { return c.Chain[len(c.Chain)-1].ID }

// Agent is the SPIFFE ID of the agent the delegation is issued to.
func (c *Claims) Agent() string { return c.Chain[len(c.Chain)-1].To }

// Depth is the number of links: 1 for a person's delegation to an agent.
func (c *Claims) Depth() int { return len(c.Chain) }

// IDs lists the IDs of every link, the person's first: revoking any of
// them revokes the delegation.
func (c *Claims) IDs() []string {
	out := make([]string, len(c.Chain))
	for i, l := range c.Chain {
		out[i] = l.ID
	}
	return out
}

// Parties lists who the delegation's chain names, the person first
// ("user:EMAIL", then the agents' SPIFFE IDs), for the audit trail.
func (c *Claims) Parties() []string {
	out := make([]string, 0, len(c.Chain)+1)
	out = append(out, c.Chain[0].By)
	for _, l := range c.Chain {
		out = append(out, l.To)
	}
	return out
}

// NewID returns a fresh delegation ID.
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// Check validates the claims' shape (not the signature, the time or the
// binding): a version-1 delegation in a valid trust domain whose chain
// starts at a person and whose every link names an agent of that domain,
// at most MaxDepth long, with distinct well-formed IDs, a scope of at most
// MaxTools entries and a lifetime within [MinTTL, MaxTTL].
func (c *Claims) Check() (reason.Code, error) {
	bad := func(format string, a ...any) (reason.Code, error) {
		return reason.DelegationMalformed, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
	}
	if c.V != 1 {
		return bad("version %d", c.V)
	}
	td, err := identity.ParseTrustDomain(c.TrustDomain)
	if err != nil {
		return bad("trust domain: %v", err)
	}
	u, err := identity.ParseUser(c.User)
	if err != nil || string(u) != c.User {
		return bad("user %q is not a canonical e-mail address", c.User)
	}
	if len(c.Chain) == 0 {
		return bad("empty chain")
	}
	if len(c.Chain) > MaxDepth {
		return reason.DelegationTooDeep, fmt.Errorf("%w: chain of %d links, at most %d", ErrInvalid, len(c.Chain), MaxDepth)
	}
	seen := map[string]bool{}
	for i, l := range c.Chain {
		if !validID(l.ID) || seen[l.ID] {
			return bad("link %d: id %q", i, l.ID)
		}
		seen[l.ID] = true
		want := u.Selector()
		if i > 0 {
			want = c.Chain[i-1].To
		}
		if l.By != want {
			return bad("link %d: granted by %q, want %q", i, l.By, want)
		}
		to, err := identity.Parse(l.To)
		if err != nil || to.String() != l.To || to.Kind != identity.KindAgent || to.TrustDomain != td {
			return bad("link %d: %q is not an agent of %s", i, l.To, td)
		}
		for _, prev := range c.Chain[:i] {
			if prev.To == l.To {
				return bad("link %d: %s appears twice in the chain", i, l.To)
			}
		}
	}
	if c.Incarnation == "" || len(c.Incarnation) > 64 {
		return bad("incarnation %q", c.Incarnation)
	}
	if len(c.Tools) > MaxTools {
		return bad("%d tools, at most %d", len(c.Tools), MaxTools)
	}
	for _, t := range c.Tools {
		if _, _, err := SplitTool(t); err != nil {
			return bad("%v", err)
		}
	}
	ttl := time.Duration(c.Expires-c.IssuedAt) * time.Second
	if c.IssuedAt <= 0 || ttl < MinTTL || ttl > MaxTTL {
		return bad("lifetime %v, want %v to %v", ttl, MinTTL, MaxTTL)
	}
	return "", nil
}

// SplitTool splits a scope entry "SERVICE/TOOL" into the tool node's name
// and the tool glob, refusing an entry whose service is not a node name or
// whose tool part is empty or longer than 128 bytes.
func SplitTool(entry string) (identity.Name, string, error) {
	svc, tool, ok := strings.Cut(entry, "/")
	if !ok || tool == "" || len(tool) > 128 {
		return "", "", fmt.Errorf("%w: tool entry %q: want SERVICE/TOOL", ErrInvalid, entry)
	}
	n, err := identity.ParseName(svc)
	if err != nil {
		return "", "", fmt.Errorf("%w: tool entry %q: %v", ErrInvalid, entry, err)
	}
	return n, tool, nil
}

func validID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Signer signs statements: the coordinator's CA (*pki.CA).
type Signer interface {
	SignStatement(purpose string, msg []byte) ([]byte, error)
}

// Sign checks c and encodes it as a token signed by s.
func Sign(s Signer, c *Claims) (string, error) {
	if _, err := c.Check(); err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	sig, err := s.SignStatement(purpose, payload)
	if err != nil {
		return "", fmt.Errorf("sign delegation: %w", err)
	}
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
	if len(tok) > MaxTokenBytes {
		return "", fmt.Errorf("%w: encoded delegation of %d bytes, at most %d", ErrInvalid, len(tok), MaxTokenBytes)
	}
	return tok, nil
}

// VerifyOptions is what a token is checked against.
type VerifyOptions struct {
	// Roots is the CA bundle (pki.Verifier.Roots).
	Roots []*x509.Certificate
	// TrustDomain is the mesh's.
	TrustDomain identity.TrustDomain
	// Peer and Incarnation are the presenting peer's, from its verified
	// certificate. The zero Peer refuses every delegation.
	Peer        identity.ID
	Incarnation string
	// Now is the time to check against; Skew the clock skew allowed
	// (zero: DefaultSkew).
	Now  time.Time
	Skew time.Duration
}

// Verify decodes tok and checks it: signature first, then the claims'
// shape, the trust domain, the binding to the peer and the time. It
// returns the claims and "", or nil, the reason code of the refusal and an
// error saying more. It does not know revocations: the caller checks
// Claims.IDs and Claims.User against its revocation list.
func Verify(tok string, o VerifyOptions) (*Claims, reason.Code, error) {
	if len(tok) > MaxTokenBytes {
		return nil, reason.DelegationMalformed, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(tok), MaxTokenBytes)
	}
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return nil, reason.DelegationMalformed, fmt.Errorf("%w: not an agentmesh delegation", ErrInvalid)
	}
	payload, err1 := base64.RawURLEncoding.Strict().DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.Strict().DecodeString(s64)
	if err1 != nil || err2 != nil {
		return nil, reason.DelegationMalformed, fmt.Errorf("%w: bad encoding", ErrInvalid)
	}
	if err := pki.VerifyStatement(o.Roots, purpose, payload, sig); err != nil {
		return nil, reason.DelegationBadSignature, err
	}
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return nil, reason.DelegationMalformed, fmt.Errorf("%w: claims: %v", ErrInvalid, err)
	}
	if why, err := c.Check(); why != "" {
		return nil, why, err
	}
	if identity.TrustDomain(c.TrustDomain) != o.TrustDomain {
		return nil, reason.DelegationForeign, fmt.Errorf("%w: for %s, not %s", ErrInvalid, c.TrustDomain, o.TrustDomain)
	}
	if o.Peer.IsZero() || c.Agent() != o.Peer.String() || c.Incarnation != o.Incarnation {
		return nil, reason.DelegationWrongAgent, fmt.Errorf("%w: issued to %s (incarnation %s), presented by %s", ErrInvalid, c.Agent(), c.Incarnation, o.Peer)
	}
	skew := o.Skew
	if skew <= 0 {
		skew = DefaultSkew
	}
	now := o.Now.Unix()
	if now+int64(skew/time.Second) < c.IssuedAt {
		return nil, reason.DelegationClockSkew, fmt.Errorf("%w: issued %s, in the future", ErrInvalid, time.Unix(c.IssuedAt, 0).UTC().Format(time.RFC3339))
	}
	if now-int64(skew/time.Second) >= c.Expires {
		return nil, reason.DelegationExpired, fmt.Errorf("%w: expired %s", ErrInvalid, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return &c, "", nil
}

// ErrInvalid is returned, wrapped, for every refused delegation.
var ErrInvalid = errors.New("invalid delegation")
