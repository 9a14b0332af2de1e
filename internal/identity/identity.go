// Package identity defines the names that agentmesh uses to say who a node is:
// node kinds, node names, tags and SPIFFE IDs of the form
// spiffe://<trust-domain>/<kind>/<name>.
//
// Every value is validated when it is constructed, so code that holds an ID,
// a Name or a Tag never has to re-check it. Parsing is strict on purpose: the
// SPIFFE ID in a peer certificate is the subject of every policy decision, so
// two spellings of one identity (case, dot segments, escapes, ports, query
// strings) must not exist.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Kind is the role of a node. The zero Kind is invalid.
type Kind string

// The kinds of node in a mesh.
const (
	KindAgent Kind = "agent"
	KindTool  Kind = "tool"
	KindModel Kind = "model"
	KindAdmin Kind = "admin"
)

// Kinds lists every valid kind, in a stable order.
var Kinds = []Kind{KindAgent, KindTool, KindModel, KindAdmin}

// ParseKind returns the Kind named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w: %q (want agent, tool, model or admin)", ErrBadKind, s)
}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	_, err := ParseKind(string(k))
	return err == nil
}

// Serves reports whether nodes of this kind run a gateway that others dial.
func (k Kind) Serves() bool { return k == KindTool || k == KindModel }

// WithArticle is the kind with its indefinite article, for messages: "an
// agent", "an admin", "a tool", "a model".
func (k Kind) WithArticle() string {
	if strings.HasPrefix(string(k), "a") { // agent, admin
		return "an " + string(k)
	}
	return "a " + string(k)
}

const maxLabel = 63

// validLabel reports whether s is a DNS-label-like name: 1 to 63 characters of
// lower-case letters, digits and '-', '_' or '.', starting with a letter or
// digit. The same rule covers node names, tag names and trust-domain labels so
// that an identity never needs escaping in a URI, a selector or a file name.
func validLabel(s string, allowDot bool) bool {
	if len(s) == 0 || len(s) > maxLabel {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		case c == '.' && allowDot && i > 0 && s[i-1] != '.':
		default:
			return false
		}
	}
	return s[len(s)-1] != '.'
}

// Name is a node name, unique among the active nodes of a mesh.
// The zero Name is invalid.
type Name string

// NameRule says, for people, which strings are node names.
const NameRule = "use 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit"

// ParseName validates s as a node name.
func ParseName(s string) (Name, error) {
	if !validLabel(s, false) {
		return "", fmt.Errorf("%w: %q (%s)", ErrBadName, s, NameRule)
	}
	return Name(s), nil
}

// Tag is a label such as "tag:payments" that policy selects nodes by.
// Tags are held by the coordinator's registry, not by certificates, so that
// re-tagging takes effect without re-issuing anything.
type Tag string

// ParseTag validates s, which must have the form "tag:NAME".
func ParseTag(s string) (Tag, error) {
	rest, ok := strings.CutPrefix(s, "tag:")
	if !ok || !validLabel(rest, false) {
		return "", fmt.Errorf("%w: %q (want tag:NAME with NAME of lower-case letters, digits, '-' or '_')", ErrBadTag, s)
	}
	return Tag(s), nil
}

// ParseTags validates a list of tags, rejecting duplicates. An empty input
// yields an empty, non-nil slice.
func ParseTags(list []string) ([]Tag, error) {
	out := make([]Tag, 0, len(list))
	seen := make(map[Tag]bool, len(list))
	for _, s := range list {
		t, err := ParseTag(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if seen[t] {
			return nil, fmt.Errorf("%w: %q listed twice", ErrBadTag, s)
		}
		seen[t] = true
		out = append(out, t)
	}
	return out, nil
}

// TagStrings returns tags as strings, the form JSON and the database
// hold them in.
func TagStrings(tags []Tag) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = string(t)
	}
	return out
}

// SplitTags parses a comma-separated list such as "tag:a,tag:b", as given on
// a command line. An empty string yields no tags.
func SplitTags(s string) ([]Tag, error) {
	if strings.TrimSpace(s) == "" {
		return []Tag{}, nil
	}
	return ParseTags(strings.Split(s, ","))
}

// TrustDomain is the name of a mesh, the host part of its SPIFFE IDs.
type TrustDomain string

// ParseTrustDomain validates s as a trust domain: dot-separated labels of
// lower-case letters, digits, '-' and '_'.
func ParseTrustDomain(s string) (TrustDomain, error) {
	if !validDotted(s) {
		return "", fmt.Errorf("%w: %q", ErrBadTrustDomain, s)
	}
	return TrustDomain(s), nil
}

func validDotted(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !validLabel(l, false) {
			return false
		}
	}
	return true
}

// ID is a node's SPIFFE ID. The zero ID is invalid and matches nothing.
type ID struct {
	TrustDomain TrustDomain
	Kind        Kind
	Name        Name
}

// New builds an ID from parts that are validated again here, so an ID can
// only exist in its valid form.
func New(td TrustDomain, kind Kind, name Name) (ID, error) {
	if _, err := ParseTrustDomain(string(td)); err != nil {
		return ID{}, err
	}
	if !kind.Valid() {
		return ID{}, fmt.Errorf("%w: %q", ErrBadKind, kind)
	}
	if _, err := ParseName(string(name)); err != nil {
		return ID{}, err
	}
	return ID{TrustDomain: td, Kind: kind, Name: name}, nil
}

// Parse parses a SPIFFE ID string. Only the exact canonical form
// spiffe://<trust-domain>/<kind>/<name> is accepted.
func Parse(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("%w: %q does not start with spiffe://", ErrBadID, s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return ID{}, fmt.Errorf("%w: %q is not spiffe://<trust-domain>/<kind>/<name>", ErrBadID, s)
	}
	id, err := New(TrustDomain(parts[0]), Kind(parts[1]), Name(parts[2]))
	if err != nil {
		return ID{}, fmt.Errorf("%w: %q: %w", ErrBadID, s, err)
	}
	return id, nil
}

// String returns the canonical SPIFFE ID, or "" for the zero ID.
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return "spiffe://" + string(id.TrustDomain) + "/" + string(id.Kind) + "/" + string(id.Name)
}

// URL returns the ID as a URL for a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: string(id.TrustDomain), Path: "/" + string(id.Kind) + "/" + string(id.Name)}
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Selector returns the policy selector naming this node, such as
// "agent:fraud-detector".
func (id ID) Selector() string { return string(id.Kind) + ":" + string(id.Name) }

// FromCertificate returns the identity in cert. A certificate must carry
// exactly one URI SAN and it must be a valid SPIFFE ID; anything else is an
// error rather than a guess.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	if cert == nil {
		return ID{}, fmt.Errorf("%w: no certificate", ErrBadID)
	}
	if len(cert.URIs) != 1 {
		return ID{}, fmt.Errorf("%w: certificate has %d URI SANs, want exactly 1", ErrBadID, len(cert.URIs))
	}
	return Parse(cert.URIs[0].String())
}

// Errors returned by the constructors; match them with errors.Is.
var (
	ErrBadKind        = errors.New("invalid node kind")
	ErrBadName        = errors.New("invalid node name")
	ErrBadTag         = errors.New("invalid tag")
	ErrBadTrustDomain = errors.New("invalid trust domain")
	ErrBadID          = errors.New("invalid SPIFFE ID")
)

// Short is how people read an identity string in a table: the selector
// (kind:name) of a SPIFFE ID that parses, "-" for "", else s as it is (an
// address, a tailnet source).
func Short(s string) string {
	if s == "" {
		return "-"
	}
	if id, err := Parse(s); err == nil {
		return id.Selector()
	}
	return s
}
