package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/nodestate"
)

func init() {
	register(&command{
		name:  "login",
		usage: "--coordinator URL[,URL...] --ca-fingerprint SHA256 --state DIR [--json]",
		short: "sign in as a person through the coordinator's OpenID Connect issuer",
		long: `Signs you in by the OAuth 2.0 device authorization flow: it prints a URL and a code, you open
the URL on any device, sign in at your identity provider and enter the code; meanwhile login polls
the provider. The ID token it gets is presented to the coordinator, which gives you a short-lived
certificate for your user identity, spiffe://TRUST-DOMAIN/user/EMAIL (user:EMAIL in policy).

DIR is a login state: it has a node state's layout (a key that never leaves it, the certificate,
the CA bundle, config.json with kind "user"), so admin commands take it with --state DIR. They
are admitted when your groups include one of the coordinator's --sso-admin-group groups. Log in
again when the certificate expires (it is as short-lived as a node's). A node's state directory
is refused. A client secret the issuer demands of its device client is read from
$AGENTMESH_SSO_CLIENT_SECRET, never from a flag.

Examples:
  agentmesh login --coordinator https://coord.internal:7443 --ca-fingerprint sha256:9f86… --state ~/.agentmesh/me
  agentmesh nodes list --state ~/.agentmesh/me`,
		run: runLogin,
	})
}

func runLogin(ctx context.Context, env Env, args []string) error {
	c := commands["login"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	coordinators := fs.String("coordinator", "", "comma-separated API `URLs` of the mesh's coordinators")
	fp := fs.String("ca-fingerprint", "", "the mesh CA's `SHA256` fingerprint, as the coordinator prints it at start")
	asJSON := jsonFlag(fs)
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *coordinators == "" || *fp == "" {
		return usagef("--coordinator and --ca-fingerprint are required")
	}
	if err := needState(*state); err != nil {
		return err
	}
	var urls []string
	for _, u := range strings.Split(*coordinators, ",") {
		urls = append(urls, strings.TrimSpace(u))
	}
	res, err := controlclient.Login(ctx, controlclient.LoginOptions{
		SSOOptions:   controlclient.SSOOptions{CAFingerprint: *fp, ClientSecret: env.Getenv("AGENTMESH_SSO_CLIENT_SECRET"), Out: env.Stderr},
		Coordinators: urls, State: *state,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env.Stdout, struct {
			User    string    `json:"user"`
			ID      string    `json:"id"`
			Groups  []string  `json:"groups"`
			Admin   bool      `json:"admin"`
			Expires time.Time `json:"expires"`
			State   string    `json:"state"`
		}{string(res.User.User), res.User.String(), res.Groups, res.Admin, res.Expires.UTC(), *state})
	}
	printf(env.Stdout, "logged in as %s (state in %s)\n", res.User.User.Selector(), *state)
	printf(env.Stdout, "identity: %s\n", res.User)
	groups := "-"
	if len(res.Groups) > 0 {
		groups = strings.Join(res.Groups, ",")
	}
	printf(env.Stdout, "groups:   %s\n", groups)
	admin := "no"
	if res.Admin {
		admin = "yes (an --sso-admin-group)"
	}
	printf(env.Stdout, "admin:    %s\n", admin)
	printf(env.Stdout, "expires:  %s\n", res.Expires.UTC().Format(time.RFC3339))
	return nil
}

// errNotLogin says that a state directory is not a login state.
var errNotLogin = errors.New("not a login state")

// loginStatus is 'status' for a login state ('agentmesh login'): who,
// until when, and which coordinator; a person runs no node, so none of a
// node's status applies. It returns errNotLogin for any other directory.
func loginStatus(env Env, state string, asJSON bool) error {
	d, err := nodestate.Open(state)
	if err != nil {
		return errNotLogin
	}
	cfg, err := d.Config()
	if err != nil || cfg.Kind != identity.KindUser {
		return errNotLogin
	}
	_, leaf, err := d.Certificate()
	if err != nil {
		return err
	}
	uid, err := identity.UserFromCertificate(leaf)
	if err != nil {
		return fmt.Errorf("state %s: %w", state, err)
	}
	valid := time.Now().Before(leaf.NotAfter)
	if asJSON {
		if err := printJSON(env.Stdout, struct {
			User        string    `json:"user"`
			ID          string    `json:"id"`
			Expires     time.Time `json:"expires"`
			Valid       bool      `json:"valid"`
			Coordinator string    `json:"coordinator"`
		}{string(uid.User), uid.String(), leaf.NotAfter.UTC(), valid, cfg.CoordinatorURL}); err != nil {
			return err
		}
	} else {
		printf(env.Stdout, "login:        %s (a person, not a node)\n", uid.User.Selector())
		printf(env.Stdout, "identity:     %s\n", uid)
		word := "valid until"
		if !valid {
			word = "EXPIRED at"
		}
		printf(env.Stdout, "certificate:  %s %s\n", word, leaf.NotAfter.UTC().Format(time.RFC3339))
		printf(env.Stdout, "coordinator:  %s\n", cfg.CoordinatorURL)
	}
	if !valid {
		if !asJSON {
			printf(env.Stderr, "run agentmesh login again\n")
		}
		return errSilent
	}
	return nil
}
