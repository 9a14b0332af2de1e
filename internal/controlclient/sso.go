package controlclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/sso"
)

// SSOOptions say how a person signs in: the coordinator is authenticated
// by the CA fingerprint before anything is sent, and tells the issuer and
// client id; the device authorization flow runs against the issuer.
type SSOOptions struct {
	// CAFingerprint is the mesh CA's SHA-256 (hex, "sha256:" allowed),
	// as the coordinator prints it at start.
	CAFingerprint string
	// ClientSecret is for issuers that register the device client as
	// confidential; empty for a public client.
	ClientSecret string
	// Out receives the verification URL and code.
	Out io.Writer
	// IssuerHTTP talks to the issuer (nil: http.DefaultClient).
	IssuerHTTP *http.Client
	// Login, for a join, is a login state ('agentmesh login'): its
	// certificate says who joins, without signing in again, and its
	// configuration names the coordinators and the CA fingerprint.
	Login string
}

// loginState reads a login state for a join: its certificate, the
// coordinators to try (given ones first) and the CA fingerprint.
func loginState(path string, given []string) (*tls.Certificate, []string, string, error) {
	dir, err := nodestate.Open(path)
	if err != nil {
		return nil, nil, "", err
	}
	cfg, err := dir.Config()
	if err != nil {
		return nil, nil, "", err
	}
	if cfg.Kind != identity.KindUser {
		return nil, nil, "", fmt.Errorf("%s is a node's state, not a login state (agentmesh login --state DIR)", path)
	}
	cert, _, err := dir.Certificate()
	if err != nil {
		return nil, nil, "", err
	}
	urls := slices.Clone(given)
	for _, u := range cfg.Known() {
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	if _, err := ssoURLs(urls); err != nil {
		return nil, nil, "", err
	}
	return cert, urls, cfg.CAFingerprint, nil
}

func ssoURLs(given []string) ([]string, error) {
	if len(given) == 0 {
		return nil, errors.New("--coordinator is required to sign in")
	}
	if len(given) > netmap.MaxCoordinators {
		return nil, fmt.Errorf("%d coordinators given, more than %d", len(given), netmap.MaxCoordinators)
	}
	for _, u := range given {
		if err := netmap.CheckCoordinatorURL(u); err != nil {
			return nil, err
		}
	}
	return given, nil
}

// NormalizeFingerprint accepts "sha256:HEX" or HEX.
func NormalizeFingerprint(s string) string {
	return strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "sha256:"))
}

// signIn asks the first coordinator that answers for its issuer and runs
// the device flow against it; it returns the ID token.
func signIn(ctx context.Context, hc *http.Client, urls []string, o SSOOptions) (string, error) {
	var info controlapi.SSOInfo
	var last error
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+controlapi.PathSSO, nil)
		if err != nil {
			return "", err
		}
		resp, err := send(hc, req, maxAnswer)
		if err != nil {
			if errors.Is(err, pki.ErrFingerprintMismatch) {
				return "", fmt.Errorf("the server at %s does not hold the CA of fingerprint %s; nothing was sent: %w", u, o.CAFingerprint, err)
			}
			last = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			err := readAPIError(resp)
			resp.Body.Close()
			return "", fmt.Errorf("coordinator %s: %w", u, err)
		}
		err = controlapi.Decode(resp.Body, maxAnswer, &info)
		resp.Body.Close()
		if err != nil {
			return "", fmt.Errorf("coordinator %s: bad answer: %w", u, err)
		}
		return sso.DeviceLogin(ctx, sso.DeviceOptions{Issuer: info.Issuer, ClientID: info.ClientID, ClientSecret: o.ClientSecret, Out: o.Out, HTTPClient: o.IssuerHTTP})
	}
	return "", fmt.Errorf("no coordinator answered: %w", last)
}

// LoginOptions are for Login.
type LoginOptions struct {
	SSOOptions
	Coordinators []string
	// State is the login state directory (a node's state layout, kind
	// "user"); a node's state directory is refused.
	State string
}

// LoginResult is who the person is now.
type LoginResult struct {
	User    identity.UserID
	Groups  []string
	Admin   bool
	Expires time.Time
}

// Login signs a person in by the device flow and stores the certificate
// the coordinator gives their user identity in o.State, beside a key that
// never leaves it. A later Login replaces the certificate.
func Login(ctx context.Context, o LoginOptions) (LoginResult, error) {
	urls, err := ssoURLs(o.Coordinators)
	if err != nil {
		return LoginResult{}, fmt.Errorf("login: %w", err)
	}
	fp := NormalizeFingerprint(o.CAFingerprint)
	if err := checkFingerprint(fp); err != nil {
		return LoginResult{}, fmt.Errorf("login: %w", err)
	}
	dir, err := nodestate.Open(o.State)
	if errors.Is(err, nodestate.ErrNotExist) {
		dir, err = nodestate.Create(o.State)
	}
	if err != nil {
		return LoginResult{}, err
	}
	if cfg, err := dir.Config(); err == nil && cfg.Kind != identity.KindUser {
		return LoginResult{}, fmt.Errorf("login: %s holds a node's state; use another --state directory for your login", o.State)
	}
	key, err := dir.Key()
	if errors.Is(err, nodestate.ErrNotExist) {
		if key, err = pki.NewKey(); err == nil {
			err = dir.SaveKey(key)
		}
	}
	if err != nil {
		return LoginResult{}, err
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		return LoginResult{}, err
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.PinnedClientTLS(fp)}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	o.CAFingerprint = fp
	tok, err := signIn(ctx, hc, urls, o.SSOOptions)
	if err != nil {
		return LoginResult{}, fmt.Errorf("login: %w", err)
	}
	body, _ := json.Marshal(controlapi.LoginRequest{IDToken: tok, CSR: string(pki.EncodeCSRPEM(csr))})
	var resp *http.Response
	var used string
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+controlapi.PathLogin, bytes.NewReader(body))
		if err != nil {
			return LoginResult{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		if resp, err = send(hc, req, maxAnswer); err == nil {
			used = u
			break
		}
	}
	if resp == nil {
		return LoginResult{}, errors.New("login: no coordinator answered")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return LoginResult{}, fmt.Errorf("login: %w", readAPIError(resp))
	}
	var lr controlapi.LoginResponse
	if err := controlapi.Decode(resp.Body, maxAnswer, &lr); err != nil {
		return LoginResult{}, fmt.Errorf("login: bad answer: %w", err)
	}
	leaf, err := singleCert(lr.Certificate)
	if err != nil {
		return LoginResult{}, fmt.Errorf("login: %w", err)
	}
	uid, err := identity.UserFromCertificate(leaf)
	if err != nil || string(uid.User) != lr.User {
		return LoginResult{}, fmt.Errorf("login: coordinator issued a certificate for %v, not user:%s", uid, lr.User)
	}
	roots, err := pki.DecodeCertsPEM([]byte(lr.CABundle))
	if err != nil || len(roots) == 0 || pki.Fingerprint(roots[0]) != fp {
		return LoginResult{}, errors.New("login: the CA bundle does not match the pinned fingerprint")
	}
	if err := dir.SaveCABundle([]byte(lr.CABundle)); err != nil {
		return LoginResult{}, err
	}
	if err := dir.SaveCertificate(leaf.Raw); err != nil {
		return LoginResult{}, err
	}
	if err := dir.SaveConfig(nodestate.Config{
		CoordinatorURL: used,
		Coordinators:   netmap.SortCoordinators(urls),
		CAFingerprint:  fp,
		TrustDomain:    string(uid.TrustDomain),
		Name:           string(uid.User),
		Kind:           identity.KindUser,
	}); err != nil {
		return LoginResult{}, err
	}
	return LoginResult{User: uid, Groups: lr.Groups, Admin: lr.Admin, Expires: leaf.NotAfter}, nil
}

// checkFingerprint says what is wrong with a CA fingerprint given by hand.
func checkFingerprint(fp string) error {
	if len(fp) != 64 || strings.Trim(fp, "0123456789abcdef") != "" {
		return errors.New("--ca-fingerprint must be the mesh CA's SHA-256, 64 hex digits (optionally sha256:...), as the coordinator prints it at start")
	}
	return nil
}
