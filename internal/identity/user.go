package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// User is a person signed in through the coordinator's OpenID Connect
// issuer, named by their e-mail address in its canonical form (lower
// case). A User is not a node: it has no Kind, it never appears in a
// netmap, and its SPIFFE ID, spiffe://<trust-domain>/user/<email>, does
// not parse as a node ID (Parse and FromCertificate refuse it), so a
// person's certificate can never pass for a node's at a gateway.
//
// The zero User is invalid.
type User string

// UserRule says, for people, which e-mail addresses name users.
const UserRule = "an e-mail address of at most 254 characters: a local part of letters, digits, '.', '_', '+' or '-', '@', and a domain of dot-separated labels"

// maxEmail is the longest address SMTP carries (RFC 5321 path limit less
// the brackets).
const maxEmail = 254

// ParseUser validates an e-mail address as a user name and returns it
// lower-cased. Only characters that need no escaping in a URI path, a
// selector or a table are allowed, so the address is its own canonical,
// escape-free spelling: two spellings of one person cannot exist. An
// address outside this rule is refused rather than escaped (fail closed).
// Only ASCII letters are folded (LowerLogin): Unicode case mapping would
// turn a foreign character into an ASCII one (the Kelvin sign U+212A
// lower-cases to 'k'), so that an address the issuer holds to be another
// person's would name this one; such an address stays as it is and fails
// the rule.
func ParseUser(email string) (User, error) {
	s := LowerLogin(email)
	local, domain, ok := strings.Cut(s, "@")
	if !ok || len(s) > maxEmail || !validLocal(local) || strings.Contains(domain, "@") || !validDotted(domain) || !strings.Contains(domain, ".") {
		return "", fmt.Errorf("%w: %q (want %s)", ErrBadUser, email, UserRule)
	}
	return User(s), nil
}

// LowerLogin returns s with its ASCII letters in lower case and every
// other byte unchanged: the canonical form of a person's login name
// (an e-mail address, a tailnet WhoIs login), in which user:LOGIN
// selectors and the logins of callers are compared. It never maps a
// non-ASCII character to an ASCII one, so no spelling outside ASCII can
// become an ASCII login it is not.
func LowerLogin(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func validLocal(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

// KindUser is the path segment of users' SPIFFE IDs. It is deliberately
// not a Kind: ParseKind refuses it, so no node can be of it.
const KindUser = "user"

// Selector is the user's policy selector, "user:alice@example.com".
func (u User) Selector() string { return KindUser + ":" + string(u) }

// UserID is a person's SPIFFE ID in a trust domain.
type UserID struct {
	TrustDomain TrustDomain
	User        User
}

// NewUserID validates both parts.
func NewUserID(td TrustDomain, u User) (UserID, error) {
	if _, err := ParseTrustDomain(string(td)); err != nil {
		return UserID{}, err
	}
	if _, err := ParseUser(string(u)); err != nil || string(u) != strings.ToLower(string(u)) {
		return UserID{}, fmt.Errorf("%w: %q", ErrBadUser, u)
	}
	return UserID{TrustDomain: td, User: u}, nil
}

// String is spiffe://<trust-domain>/user/<email>.
func (id UserID) String() string {
	if id.User == "" {
		return ""
	}
	return "spiffe://" + string(id.TrustDomain) + "/" + KindUser + "/" + string(id.User)
}

// URL returns the ID as a URL for a certificate's URI SAN.
func (id UserID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: string(id.TrustDomain), Path: "/" + KindUser + "/" + string(id.User)}
}

// ParseUserID parses the exact canonical form spiffe://<td>/user/<email>.
func ParseUserID(s string) (UserID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return UserID{}, fmt.Errorf("%w: %q does not start with spiffe://", ErrBadID, s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[1] != KindUser {
		return UserID{}, fmt.Errorf("%w: %q is not spiffe://<trust-domain>/user/<email>", ErrBadID, s)
	}
	id, err := NewUserID(TrustDomain(parts[0]), User(parts[2]))
	if err != nil {
		return UserID{}, fmt.Errorf("%w: %q: %w", ErrBadID, s, err)
	}
	return id, nil
}

// UserFromCertificate returns the person a certificate names: exactly one
// URI SAN, a canonical user SPIFFE ID.
func UserFromCertificate(cert *x509.Certificate) (UserID, error) {
	if cert == nil {
		return UserID{}, fmt.Errorf("%w: no certificate", ErrBadID)
	}
	if len(cert.URIs) != 1 {
		return UserID{}, fmt.Errorf("%w: certificate has %d URI SANs, want exactly 1", ErrBadID, len(cert.URIs))
	}
	return ParseUserID(cert.URIs[0].String())
}

// ErrBadUser is returned for a string that is not a user name.
var ErrBadUser = errors.New("invalid user")
