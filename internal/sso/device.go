package sso

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// DeviceOptions says whom to ask for an ID token.
type DeviceOptions struct {
	Issuer, ClientID string
	// ClientSecret is for providers that register the device client as
	// confidential; most register it public (RFC 8628 section 5.6).
	ClientSecret string
	// Out is where the verification URL and code are printed.
	Out io.Writer
	// HTTPClient talks to the issuer (http.DefaultClient).
	HTTPClient *http.Client
}

// DeviceLogin runs the device authorization flow (RFC 8628): it asks the
// issuer for a device code, prints where and with which code to approve
// it, and polls the token endpoint at the interval the issuer asks for
// (slowing down when told to, giving up when the code expires or ctx
// ends). It returns the raw ID token.
func DeviceLogin(ctx context.Context, o DeviceOptions) (string, error) {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: DiscoveryTimeout} // each request; the polling ends at the code's expiry
	}
	ctx = oidc.ClientContext(ctx, o.HTTPClient)
	ctx = context.WithValue(ctx, oauth2.HTTPClient, o.HTTPClient)
	p, err := oidc.NewProvider(ctx, o.Issuer)
	if err != nil {
		return "", fmt.Errorf("sign in: OpenID Connect discovery at %s failed: %w", o.Issuer, err)
	}
	ep := p.Endpoint()
	if ep.DeviceAuthURL == "" {
		return "", fmt.Errorf("sign in: the issuer %s offers no device authorization endpoint", o.Issuer)
	}
	conf := &oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Endpoint: ep, Scopes: []string{oidc.ScopeOpenID, "email", "profile", "groups"}}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return "", fmt.Errorf("sign in: device authorization: %w", err)
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "To sign in, open %s and enter the code %s\n", da.VerificationURI, da.UserCode)
		if da.VerificationURIComplete != "" {
			fmt.Fprintf(o.Out, "(or open %s)\n", da.VerificationURIComplete)
		}
	}
	// DeviceAccessToken polls at da.Interval, adds 5 s on slow_down and
	// stops at da.Expiry.
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "expired_token" {
			return "", errors.New("sign in: the code expired before it was approved; run the command again")
		}
		return "", fmt.Errorf("sign in: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", errors.New("sign in: the issuer answered without an ID token (is the openid scope allowed for this client?)")
	}
	return raw, nil
}
