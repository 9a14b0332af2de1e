package coordinator

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sso"
)

// People: single sign-on. With an OpenID Connect issuer configured
// (Config.SSO), a person presents an ID token from it:
//
//   - to POST /v1/login, with a CSR, and gets a short-lived certificate
//     for spiffe://<trust-domain>/user/<email> (identity.UserID), recorded
//     as a login (the logins table: the groups the token named);
//   - to POST /v1/join, instead of an auth key ('join --sso'), and the
//     node is recorded with the person as its owner, when the policy's
//     node_owners lets them join that kind with those tags.
//
// A person's certificate is no node certificate (pki.Verify refuses it):
// it opens only the admin API, and only when the login's groups include
// one of Config.SSOAdminGroups. Every refusal has its own reason code and
// is audited.

const loginsTable = `
CREATE TABLE logins (
	incarnation TEXT PRIMARY KEY,
	email       TEXT NOT NULL,
	groups      TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL
);
CREATE TABLE sso_tokens (
	hash       TEXT PRIMARY KEY,
	expires_at BIGINT NOT NULL
);`

// startSSO runs discovery against the configured issuer, so that a wrong
// issuer URL stops the start with a clear error rather than the first login.
func (c *Coordinator) startSSO(ctx context.Context) error {
	if !c.cfg.SSO.Enabled() {
		if len(c.cfg.SSOAdminGroups) > 0 {
			return errors.New("--sso-admin-group needs an OpenID Connect issuer (--sso-issuer)")
		}
		return nil
	}
	cfg := c.cfg.SSO
	cfg.Now = c.now
	v, err := sso.New(ctx, cfg)
	if err != nil {
		return err
	}
	c.sso = v
	return nil
}

func (c *Coordinator) ssoRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathSSO, c.handleSSOInfo)
	mux.HandleFunc("POST "+controlapi.PathLogin, c.handleLogin)
}

func (c *Coordinator) handleSSOInfo(w http.ResponseWriter, r *http.Request) {
	if c.sso == nil {
		writeError(w, http.StatusNotFound, reason.SSONotConfigured, "this coordinator has no OpenID Connect issuer (--sso-issuer)")
		return
	}
	writeJSON(w, http.StatusOK, controlapi.SSOInfo{Issuer: c.sso.Issuer(), ClientID: c.sso.ClientID()})
}

// verifyPerson checks an ID token for the request whose fingerprint is
// bind (requestBinding); the refusal's code comes back with it.
func (c *Coordinator) verifyPerson(ctx context.Context, token, bind string) (sso.Person, reason.Code, string) {
	if c.sso == nil {
		return sso.Person{}, reason.SSONotConfigured, "this coordinator has no OpenID Connect issuer (--sso-issuer)"
	}
	p, err := c.sso.Verify(ctx, token)
	var se *sso.Error
	if errors.As(err, &se) {
		return p, se.Code, se.Msg
	}
	if err != nil {
		return p, reason.SSOBadToken, err.Error()
	}
	// An ID token is a bearer credential: it signs in once, so that one
	// read from a log, a proxy or a shell history cannot sign in again.
	// The one exception is the same request again (same public key, and
	// for a join the same name, kind and tags): a client whose answer was
	// lost retries with the token it has, and whoever replays that
	// request gets a certificate for a key only the client holds.
	fresh, err := c.reg.useToken(ctx, token, bind, p.Expiry.Add(sso.MaxSkew), c.now())
	if err != nil {
		return p, reason.Internal, "could not record the ID token's use"
	}
	if !fresh {
		return p, reason.SSOTokenUsed, "this ID token has signed in already; sign in again for a new one"
	}
	return p, "", ""
}

// useToken records that the ID token raw was used for the request bind,
// until keep, and reports whether it may sign in: it had not been used
// before, or only for this same request. Expired records are dropped.
func (r *registry) useToken(ctx context.Context, raw, bind string, keep, now time.Time) (bool, error) {
	h := sha256.Sum256([]byte(raw))
	hash := hex.EncodeToString(h[:])
	if _, err := r.db.ExecContext(ctx, `DELETE FROM sso_tokens WHERE expires_at < $1`, now.UnixNano()); err != nil {
		return false, err
	}
	res, err := r.db.ExecContext(ctx, `INSERT INTO sso_tokens(hash, expires_at, binding) VALUES($1, $2, $3) ON CONFLICT (hash) DO NOTHING`, hash, keep.UnixNano(), bind)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 1 {
		return n == 1, err
	}
	var first string
	if err := r.db.QueryRowContext(ctx, `SELECT binding FROM sso_tokens WHERE hash = $1`, hash).Scan(&first); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return false, err
	}
	return bind != "" && first == bind, nil
}

// requestBinding fingerprints what a sign-in asks for, so that a token is
// honoured again only for the same request: the purpose ("login" or
// "join"), the CSR's public key and, for a join, the node's name, kind and
// tags as the request spelled them.
func requestBinding(purpose string, csr *x509.CertificateRequest, fields ...string) string {
	h := sha256.New()
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write(csr.RawSubjectPublicKeyInfo)
	for _, f := range fields {
		h.Write([]byte{0})
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// handleLogin gives a person a certificate for their user identity.
// Anybody may call it, so it is bounded as join is.
func (c *Coordinator) handleLogin(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code reason.Code, outcome audit.Outcome, msg, user string) {
		ev := c.event(audit.KindAdmin, user, "coordinator")
		ev.Action, ev.SrcAddr = "user.login", r.RemoteAddr
		ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, code, outcome, msg
		c.refuse(r.Context(), ev)
		if status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status == http.StatusRequestEntityTooLarge {
			closeAfter(w)
		}
		writeError(w, status, code, msg)
	}
	if !c.joinRate.Allow(sourceOf(r)) {
		refuse(http.StatusTooManyRequests, reason.RateLimited, audit.OutcomeRefused, "too many sign-in attempts from this address; wait and try again", "")
		return
	}
	select {
	case c.joinSlots <- struct{}{}:
		defer func() { <-c.joinSlots }()
	default:
		refuse(http.StatusTooManyRequests, reason.RateLimited, audit.OutcomeRefused, "too many sign-ins in progress; try again shortly", "")
		return
	}
	if be := readBody(w, r, controlapi.MaxJoinBody, c.limits.JoinBodyTimeout); be != nil {
		refuse(be.status, be.code, be.outcome, be.msg, "")
		return
	}
	var req controlapi.LoginRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxJoinBody, &req); err != nil {
		refuse(http.StatusBadRequest, reason.BadRequest, audit.OutcomeRejected, "malformed login request: "+peerText(err.Error()), "")
		return
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		refuse(http.StatusBadRequest, reason.BadCSR, audit.OutcomeRejected, err.Error(), "")
		return
	}
	person, code, msg := c.verifyPerson(r.Context(), req.IDToken, requestBinding("login", csr))
	if code == reason.Internal {
		c.internalError(w, r, "login", errors.New(msg))
		return
	}
	if code != "" {
		refuse(http.StatusUnauthorized, code, audit.OutcomeRefused, msg, "")
		return
	}
	if revoked, err := c.revokedPerson(r.Context(), person.User); err != nil || revoked {
		if err != nil {
			c.internalError(w, r, "login: revoked people", err)
			return
		}
		refuse(http.StatusForbidden, reason.Revoked, audit.OutcomeRefused, person.User.Selector()+" has been revoked in this mesh (agentmesh users restore)", person.User.Selector())
		return
	}
	uid, err := identity.NewUserID(c.td, person.User)
	if err != nil {
		refuse(http.StatusUnauthorized, reason.SSONoEmail, audit.OutcomeRefused, err.Error(), "")
		return
	}
	now := c.now()
	inc := newIncarnation()
	cert, der, err := c.ca.IssueUser(csr, uid, pki.IssueRequest{Incarnation: inc, TTL: c.cfg.CertTTL, Now: now})
	if err != nil {
		c.internalError(w, r, "login: issue", err)
		return
	}
	if err := c.reg.addLogin(r.Context(), inc, person, now, cert.NotAfter); err != nil {
		c.internalError(w, r, "login: record", err)
		return
	}
	admin := c.ssoAdmin(person.Groups)
	ev := c.event(audit.KindAdmin, uid.String(), "coordinator")
	ev.Action, ev.Target, ev.SrcAddr, ev.Decision = "user.login", person.User.Selector(), r.RemoteAddr, audit.Allow
	ev.Detail = "groups " + strings.Join(person.Groups, ",")
	if admin {
		ev.Detail += "; admin through an --sso-admin-group"
	}
	c.record(r.Context(), ev)
	writeJSON(w, http.StatusOK, controlapi.LoginResponse{
		Certificate: string(pki.EncodeCertPEM(&x509.Certificate{Raw: der})),
		CABundle:    string(pki.EncodeCertPEM(c.ca.Certificate())),
		User:        string(person.User),
		Groups:      person.Groups,
		Admin:       admin,
	})
}

func (c *Coordinator) ssoAdmin(groups []string) bool {
	return slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(c.cfg.SSOAdminGroups, g) })
}

// joinSSO is handleJoin for a person with an ID token instead of an auth
// key: the node's kind (agent when not given) and tags are the ones asked
// for, and the policy's node_owners must let this person join them.
func (c *Coordinator) joinSSO(w http.ResponseWriter, r *http.Request, req controlapi.JoinRequest, name identity.Name, refuse func(int, reason.Code, audit.Outcome, string)) {
	var person sso.Person
	var code reason.Code
	var msg string
	csr, err := parseCSR(req.CSR)
	if err != nil {
		refuse(http.StatusBadRequest, reason.BadCSR, audit.OutcomeRejected, err.Error())
		return
	}
	if req.IDToken != "" {
		bind := requestBinding("join", csr, string(name), req.Kind, strings.Join(req.Tags, ","))
		person, code, msg = c.verifyPerson(r.Context(), req.IDToken, bind)
	} else {
		person, code, msg = c.personOfCert(r)
	}
	if code == reason.Internal {
		c.internalError(w, r, "join: sso", errors.New(msg))
		return
	}
	if code != "" {
		refuse(http.StatusUnauthorized, code, audit.OutcomeRefused, msg)
		return
	}
	if revoked, err := c.revokedPerson(r.Context(), person.User); err != nil || revoked {
		if err != nil {
			c.internalError(w, r, "join: revoked people", err)
			return
		}
		refuse(http.StatusForbidden, reason.Revoked, audit.OutcomeRefused, person.User.Selector()+" has been revoked in this mesh")
		return
	}
	kind := identity.KindAgent
	if req.Kind != "" {
		k, err := identity.ParseKind(req.Kind)
		if err != nil {
			refuse(http.StatusBadRequest, reason.KindNotAllowed, audit.OutcomeRejected, fmt.Sprintf("invalid kind \"%s\"", peerText(req.Kind)))
			return
		}
		kind = k
	}
	tags, err := identity.ParseTags(req.Tags)
	if err != nil || len(tags) > 64 {
		refuse(http.StatusBadRequest, reason.BadRequest, audit.OutcomeRejected, "invalid tags: want at most 64 distinct tag:NAME")
		return
	}
	if ok, why := c.currentPolicy().MayOwn(string(person.User), person.Groups, kind, tags); !ok {
		refuse(http.StatusForbidden, reason.OwnerNotAllowed, audit.OutcomeRefused, why)
		return
	}
	id, err := identity.New(c.td, kind, name)
	if err != nil {
		refuse(http.StatusBadRequest, reason.BadName, audit.OutcomeRejected, err.Error())
		return
	}
	now := c.now()
	n := netmap.Node{ID: id, Name: name, Kind: kind, Tags: tags, Incarnation: newIncarnation()}
	spki := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	inc, err := c.reg.joinOwned(r.Context(), n, string(person.User), hex.EncodeToString(spki[:]), now)
	if err != nil {
		var je *joinError
		if errors.As(err, &je) {
			refuse(http.StatusForbidden, je.code, audit.OutcomeRefused, je.msg)
			return
		}
		c.internalError(w, r, "join: sso", err)
		return
	}
	detail := "sso, owner " + person.User.Selector()
	if inc != n.Incarnation {
		detail += "; the same node again (same owner and key pair): its earlier join had committed, its answer was lost"
		n.Incarnation = inc
	}
	c.admitJoined(w, r, n, id, csr, now, detail)
}

// isUserCert reports whether the request's client certificate names a
// person (not yet verified: userAdmin verifies it).
func isUserCert(r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || len(r.TLS.PeerCertificates[0].URIs) != 1 {
		return false
	}
	_, err := identity.ParseUserID(r.TLS.PeerCertificates[0].URIs[0].String())
	return err == nil
}

// userAdmin admits a person to an admin handler: a certificate of the
// mesh CA for their user ID, from a login that is recorded and unexpired,
// whose groups include one of Config.SSOAdminGroups. Refusals are audited.
func (c *Coordinator) userAdmin(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who := caller{addr: r.RemoteAddr}
		deny := func(status int, code reason.Code, msg string) {
			ev := c.event(audit.KindConnection, who.user.String(), "coordinator")
			ev.SrcAddr, ev.Method = r.RemoteAddr, r.Method+" "+r.URL.Path
			ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, code, audit.OutcomeRefused, msg
			c.refuse(r.Context(), ev)
			closeAfter(w)
			writeError(w, status, code, msg)
		}
		p, code, msg := c.personOfCert(r)
		who.user, _ = identity.NewUserID(c.td, p.User)
		switch {
		case code == reason.Internal:
			c.internalError(w, r, "authenticate user", errors.New(msg))
			return
		case code != "":
			deny(http.StatusUnauthorized, code, msg)
			return
		case !c.ssoAdmin(p.Groups):
			deny(http.StatusForbidden, reason.NotAdmin, "this operation needs an admin identity: "+p.User.Selector()+" is in none of the coordinator's --sso-admin-group groups")
			return
		}
		h(w, r, who)
	}
}

// personOfCert is the person a request's client certificate names: a
// certificate of the mesh CA for their user ID, valid now, from a login
// the coordinator recorded; their groups are the login's.
func (c *Coordinator) personOfCert(r *http.Request) (sso.Person, reason.Code, string) {
	if c.sso == nil {
		return sso.Person{}, reason.SSONotConfigured, "this coordinator has no OpenID Connect issuer (--sso-issuer)"
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return sso.Person{}, reason.NoCertificate, "a login certificate or an ID token is required (run agentmesh login first)"
	}
	uid, err := c.verifier.VerifyUser(r.TLS.PeerCertificates)
	if err != nil {
		return sso.Person{}, pki.ReasonOf(err), "client certificate refused: " + err.Error()
	}
	l, err := c.reg.login(r.Context(), pki.Incarnation(r.TLS.PeerCertificates[0]))
	switch {
	case errors.Is(err, errNotFound) || err == nil && l.email != string(uid.User):
		return sso.Person{User: uid.User}, reason.UnknownPeer, "this coordinator knows no login of this certificate; run agentmesh login again"
	case err != nil:
		return sso.Person{User: uid.User}, reason.Internal, err.Error()
	}
	return sso.Person{User: uid.User, Groups: l.groups}, "", ""
}

type loginRow struct {
	email  string
	groups []string
}

func (r *registry) addLogin(ctx context.Context, inc string, p sso.Person, now, expires time.Time) error {
	// A login is needed while its certificate is valid; older ones go.
	if _, err := r.db.ExecContext(ctx, `DELETE FROM logins WHERE expires_at < $1`, now.UnixNano()); err != nil {
		return err
	}
	groups, _ := json.Marshal(p.Groups)
	_, err := r.db.ExecContext(ctx, `INSERT INTO logins(incarnation, email, groups, created_at, expires_at) VALUES($1, $2, $3, $4, $5)`,
		inc, string(p.User), string(groups), now.UnixNano(), expires.UnixNano())
	return err
}

func (r *registry) login(ctx context.Context, inc string) (loginRow, error) {
	var l loginRow
	var groups string
	err := r.db.QueryRowContext(ctx, `SELECT email, groups FROM logins WHERE incarnation = $1`, inc).Scan(&l.email, &groups)
	if errors.Is(err, sql.ErrNoRows) {
		return l, errNotFound
	}
	if err != nil {
		return l, err
	}
	return l, json.Unmarshal([]byte(groups), &l.groups)
}

// joinOwned records a node joined by a person, who is its owner.
func (r *registry) joinOwned(ctx context.Context, n netmap.Node, owner, spki string, now time.Time) (string, error) {
	inc := n.Incarnation
	err := r.writeNode(ctx, func(tx *sql.Tx) (string, error) {
		// The same node again: the same person joining the same name with
		// the same key pair (and kind and tags), after an answer was lost.
		tags, _ := json.Marshal(n.Tags)
		err := tx.QueryRowContext(ctx, `SELECT incarnation FROM nodes WHERE name = $1 AND status = 'active'
			AND owner = $2 AND key_spki = $3 AND kind = $4 AND tags = $5`, string(n.Name), owner, spki, string(n.Kind), string(tags)).Scan(&inc)
		if err == nil {
			return inc, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", err
		}
		var held int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM nodes WHERE name = $1 AND status = 'active'`, string(n.Name)).Scan(&held); err != nil {
			return "", err
		}
		if held > 0 {
			return "", &joinError{reason.NameTaken, fmt.Sprintf("name %q is held by another active node (revoke it first or pick another name)", n.Name)}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO nodes(incarnation, name, kind, tags, status, key_id, key_spki, created_at, last_seen, owner)
			VALUES($1, $2, $3, $4, 'active', '', $5, $6, $7, $8)`, n.Incarnation, string(n.Name), string(n.Kind), string(tags), spki, now.UnixNano(), now.UnixNano(), owner)
		return n.Incarnation, err
	})
	return inc, err
}
