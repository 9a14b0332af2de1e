// Package sso signs people in through an OpenID Connect issuer: the
// coordinator verifies ID tokens (Verifier), and the CLI obtains them by
// the OAuth 2.0 device authorization flow, RFC 8628 (DeviceLogin).
// Discovery, signature checks and the device flow are go-oidc's and
// golang.org/x/oauth2's; this package adds the mesh's rules: a bounded
// clock skew, one reason code for each refusal, and the person's name
// (identity.User) and groups.
package sso

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// DefaultSkew is the clock skew allowed between the issuer and us.
const DefaultSkew = 2 * time.Minute

// MaxSkew bounds Config.Skew.
const MaxSkew = 10 * time.Minute

// DiscoveryTimeout bounds discovery and each fetch of the issuer's keys.
const DiscoveryTimeout = 30 * time.Second

// MaxGroups bounds the groups taken from one token.
const MaxGroups = 256

// MaxTokenBytes bounds the ID token a caller may present.
const MaxTokenBytes = 16 << 10

// Config names the issuer and how to read its tokens.
type Config struct {
	// Issuer is the issuer URL (discovery at Issuer/.well-known/openid-configuration).
	Issuer string
	// ClientID is the audience ID tokens must be issued to.
	ClientID string
	// GroupsClaim names the claim holding the person's groups ("" : none).
	GroupsClaim string
	// EmailClaim names a claim other than "email" that holds the person's
	// address, for issuers that do not send email_verified (Microsoft
	// Entra ID's "upn", say): its value is trusted as the issuer's own,
	// with no email_verified. "" (or "email") reads "email", and only
	// when email_verified is true. It must name a claim the person cannot
	// set themselves; "email" itself is never trusted unverified.
	EmailClaim string
	// Skew is the clock skew allowed (DefaultSkew when zero; at most MaxSkew).
	Skew time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// HTTPClient fetches discovery and keys (http.DefaultClient).
	HTTPClient *http.Client
}

// Enabled reports whether an issuer is configured.
func (c Config) Enabled() bool { return c.Issuer != "" }

// Person is who a verified ID token names.
type Person struct {
	User    identity.User
	Groups  []string
	Subject string
	Expiry  time.Time
}

// Verifier checks ID tokens of one issuer for one audience.
type Verifier struct {
	cfg Config
	v   *oidc.IDTokenVerifier
}

// New runs discovery against cfg.Issuer and returns a Verifier; an issuer
// that does not answer discovery, or answers for another issuer, is an
// error that says so.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if cfg.ClientID == "" {
		return nil, errors.New("sso: an OpenID Connect issuer needs a client id (--sso-client-id)")
	}
	if cfg.Skew == 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.Skew < 0 || cfg.Skew > MaxSkew {
		return nil, fmt.Errorf("sso: clock skew %v is outside 0..%v", cfg.Skew, MaxSkew)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		// Discovery and key fetches are bounded: an issuer that hangs
		// must not hang the start or a sign-in.
		cfg.HTTPClient = &http.Client{Timeout: DiscoveryTimeout}
	}
	ctx = oidc.ClientContext(ctx, cfg.HTTPClient)
	dctx, cancel := context.WithTimeout(ctx, DiscoveryTimeout)
	defer cancel()
	p, err := oidc.NewProvider(dctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("sso: OpenID Connect discovery at %s failed: %w (check --sso-issuer: it must be the issuer URL exactly as the provider states it)", cfg.Issuer, err)
	}
	// Expiry is checked here, with the bounded skew and its own reason.
	v := p.VerifierContext(context.WithoutCancel(ctx), &oidc.Config{ClientID: cfg.ClientID, SkipExpiryCheck: true, Now: cfg.Now})
	return &Verifier{cfg: cfg, v: v}, nil
}

// Issuer returns the configured issuer URL.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// ClientID returns the audience.
func (v *Verifier) ClientID() string { return v.cfg.ClientID }

// Error is a refused token: Code says why.
type Error struct {
	Code reason.Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func refuse(code reason.Code, format string, a ...any) (Person, error) {
	return Person{}, &Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}

// unverified is the part of the payload read before verification, only to
// name the reason of a refusal: nothing in it is trusted.
type unverified struct {
	Issuer   string          `json:"iss"`
	Audience json.RawMessage `json:"aud"`
}

// Verify checks raw: signature by the issuer's published keys, issuer,
// audience, expiry and issue time within the allowed skew, and a verified
// e-mail address that is a valid user name. Errors are *Error.
func (v *Verifier) Verify(ctx context.Context, raw string) (Person, error) {
	if raw == "" || len(raw) > MaxTokenBytes {
		return refuse(reason.SSOBadToken, "an ID token of 1 to %d bytes is required", MaxTokenBytes)
	}
	if u, ok := peek(raw); ok {
		if u.Issuer != v.cfg.Issuer {
			return refuse(reason.SSOForeignIssuer, "the ID token was issued by another issuer, not %s", v.cfg.Issuer)
		}
		if !audienceHas(u.Audience, v.cfg.ClientID) {
			return refuse(reason.SSOWrongAudience, "the ID token was issued to another client, not %s", v.cfg.ClientID)
		}
	}
	tok, err := v.v.Verify(ctx, raw)
	if err != nil {
		// Issuer and audience were named above when the payload read;
		// what is left is a token that does not verify.
		return refuse(reason.SSOBadToken, "the ID token does not verify: %v", err)
	}
	now := v.cfg.Now()
	if now.After(tok.Expiry.Add(v.cfg.Skew)) {
		return refuse(reason.SSOExpired, "the ID token expired at %s (allowed skew %v); sign in again", tok.Expiry.UTC().Format(time.RFC3339), v.cfg.Skew)
	}
	if tok.IssuedAt.After(now.Add(v.cfg.Skew)) {
		return refuse(reason.SSOClockSkew, "the ID token is issued at %s, in the future beyond the allowed skew %v: check the clocks", tok.IssuedAt.UTC().Format(time.RFC3339), v.cfg.Skew)
	}
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return refuse(reason.SSOBadToken, "the ID token's claims do not parse")
	}
	// Only an address the issuer says it verified names a person: one
	// without email_verified true could be anybody's.
	var email string
	if v.cfg.EmailClaim == "" || v.cfg.EmailClaim == "email" {
		var verified bool
		_ = json.Unmarshal(claims["email"], &email)
		_ = json.Unmarshal(claims["email_verified"], &verified) // a string "true" and the like stay false
		if email == "" || !verified {
			return refuse(reason.SSONoEmail, "the ID token carries no e-mail address marked email_verified (ask for the email scope; the provider must verify it, or name a claim it controls with --sso-email-claim)")
		}
	} else if _ = json.Unmarshal(claims[v.cfg.EmailClaim], &email); email == "" {
		return refuse(reason.SSONoEmail, "the ID token carries no claim %q (--sso-email-claim) holding an address", v.cfg.EmailClaim)
	}
	user, err := identity.ParseUser(email)
	if err != nil {
		return refuse(reason.SSONoEmail, "the ID token's e-mail address is not a user name: %s", identity.UserRule)
	}
	p := Person{User: user, Subject: tok.Subject, Expiry: tok.Expiry}
	if v.cfg.GroupsClaim != "" {
		if g, ok := claims[v.cfg.GroupsClaim]; ok {
			var groups []string
			if err := json.Unmarshal(g, &groups); err != nil {
				return refuse(reason.SSOBadToken, "the claim %q is not a list of strings", v.cfg.GroupsClaim)
			}
			if len(groups) > MaxGroups {
				return refuse(reason.SSOBadToken, "the claim %q lists %d groups, more than %d", v.cfg.GroupsClaim, len(groups), MaxGroups)
			}
			for _, s := range groups {
				if s == "" || len(s) > 256 || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
					return refuse(reason.SSOBadToken, "the claim %q holds a group name that is empty, too long or has control characters", v.cfg.GroupsClaim)
				}
			}
			slices.Sort(groups)
			p.Groups = slices.Compact(groups)
		}
	}
	if p.Groups == nil {
		p.Groups = []string{}
	}
	return p, nil
}

// peek decodes a JWS compact payload without verifying it.
func peek(raw string) (unverified, bool) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return unverified{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return unverified{}, false
	}
	var u unverified
	if json.Unmarshal(b, &u) != nil {
		return unverified{}, false
	}
	return u, true
}

func audienceHas(raw json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(raw, &many) == nil && slices.Contains(many, want)
}
