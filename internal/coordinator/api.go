package coordinator

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/textdiff"
)

// MaxKeyExpiry bounds how long an auth key may stay usable.
const MaxKeyExpiry = 90 * 24 * time.Hour

// DefaultKeyExpiry is the lifetime of an auth key created without --expiry.
const DefaultKeyExpiry = 24 * time.Hour

// longPoll is how long a netmap watch waits for a change before it answers
// "nothing new" and the client asks again.
const longPoll = 25 * time.Second

func (c *Coordinator) routes() http.Handler {
	mux := http.NewServeMux()
	// Every body is read whole, within its size and time limits, after
	// the caller is authenticated and before the handler runs (withBody);
	// join, which has no caller yet, reads its own under tighter ones.
	body := func(max int64, h handler) handler { return c.withBody(max, h) }
	const small = controlapi.MaxBody
	mux.HandleFunc("POST "+controlapi.PathJoin, c.handleJoin)
	mux.HandleFunc("GET /healthz", c.handleHealth)
	mux.HandleFunc("GET /readyz", c.handleReady)
	mux.HandleFunc("POST "+controlapi.PathRenew, c.node(body(small, c.handleRenew)))
	mux.HandleFunc("GET "+controlapi.PathNetmap, c.node(c.handleNetmap))
	mux.HandleFunc("POST "+controlapi.PathRegister, c.node(body(small, c.handleRegister)))
	mux.HandleFunc("POST "+controlapi.PathAudit, c.node(body(controlapi.MaxAuditBody, c.handleAuditIngest)))
	mux.HandleFunc("GET "+controlapi.PathAudit, c.admin(c.handleAuditQuery))
	mux.HandleFunc("GET "+controlapi.PathVerify, c.admin(c.handleAuditVerify))
	mux.HandleFunc("POST "+controlapi.PathVerify, c.admin(body(small, c.handleAuditVerify)))
	mux.HandleFunc("POST "+controlapi.PathKeys, c.admin(body(small, c.handleKeyCreate)))
	mux.HandleFunc("GET "+controlapi.PathKeys, c.admin(c.handleKeyList))
	mux.HandleFunc("POST "+controlapi.PathKeys+"/{id}/revoke", c.admin(body(small, c.handleKeyRevoke)))
	mux.HandleFunc("GET "+controlapi.PathNodes, c.admin(c.handleNodeList))
	mux.HandleFunc("POST "+controlapi.PathNodes+"/{name}/tags", c.admin(body(small, c.handleNodeTag)))
	mux.HandleFunc("POST "+controlapi.PathNodes+"/{name}/revoke", c.admin(body(small, c.handleNodeRevoke)))
	mux.HandleFunc("POST "+controlapi.PathPolicy, c.admin(body(policy.MaxDocumentBytes+64<<10, c.handlePolicyApply)))
	mux.HandleFunc("GET "+controlapi.PathPolicy, c.admin(c.handlePolicyGet))
	mux.HandleFunc("GET "+controlapi.PathHistory, c.admin(c.handlePolicyHistory))
	mux.HandleFunc("POST "+controlapi.PathRollback, c.admin(body(small, c.handlePolicyRollback)))
	c.shadowRoutes(mux, body)
	c.approvalRoutes(mux, body)
	c.ssoRoutes(mux)
	c.delegationRoutes(mux)
	mux.HandleFunc("POST "+controlapi.PathTools, c.node(body(controlapi.MaxReportBytes+64<<10, c.handleToolReport)))
	mux.HandleFunc("GET "+controlapi.PathTools, c.admin(c.handleToolList))
	mux.HandleFunc("GET "+controlapi.PathServices, c.node(c.handleServices)) // any node: its own view (services.go)
	return mux
}

// caller is an authenticated node making a request.
type caller struct {
	id   identity.ID
	node nodeRow
	addr string
	// user is set instead of id and node for a person admitted by an
	// OIDC admin group (sso.go).
	user identity.UserID
}

// actor is who the caller is, for the audit trail and records.
func (who caller) actor() string {
	if who.user.User != "" {
		return who.user.String()
	}
	return who.id.String()
}

type handler func(w http.ResponseWriter, r *http.Request, who caller)

// node authenticates the client certificate: a valid chain to the mesh CA
// at the coordinator's clock, naming a node that is active under the same
// incarnation. A refusal is audited as a connection event.
func (c *Coordinator) node(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, code, err := c.authenticate(r)
		if code == reason.Internal {
			closeAfter(w)
			c.internalError(w, r, "authenticate", err)
			return
		}
		if err != nil {
			ev := c.event(audit.KindConnection, who.actor(), "coordinator")
			ev.SrcAddr = r.RemoteAddr
			ev.Method = r.Method + " " + r.URL.Path
			ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, code, audit.OutcomeRefused, err.Error()
			c.refuse(r.Context(), ev)
			closeAfter(w) // its body, if any, is never read
			writeError(w, http.StatusUnauthorized, code, err.Error())
			return
		}
		h(w, r, who)
	}
}

// admin is node plus: the caller must be of kind admin, or a person in an
// OIDC admin group (userAdmin, sso.go).
func (c *Coordinator) admin(h handler) http.HandlerFunc {
	nodeAdmin := c.nodeAdmin(h)
	userAdmin := c.userAdmin(h)
	return func(w http.ResponseWriter, r *http.Request) {
		if isUserCert(r) {
			userAdmin(w, r)
			return
		}
		nodeAdmin(w, r)
	}
}

func (c *Coordinator) nodeAdmin(h handler) http.HandlerFunc {
	return c.node(func(w http.ResponseWriter, r *http.Request, who caller) {
		if who.id.Kind != identity.KindAdmin {
			ev := c.event(audit.KindConnection, who.actor(), "coordinator")
			ev.SrcAddr, ev.Method = r.RemoteAddr, r.Method+" "+r.URL.Path
			ev.Decision, ev.Reason, ev.Outcome = audit.Deny, reason.NotAdmin, audit.OutcomeRefused
			c.refuse(r.Context(), ev)
			writeError(w, http.StatusForbidden, reason.NotAdmin, "this operation needs an admin identity")
			return
		}
		h(w, r, who)
	})
}

func (c *Coordinator) authenticate(r *http.Request) (caller, reason.Code, error) {
	who := caller{addr: r.RemoteAddr}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return who, reason.NoCertificate, errors.New("a client certificate is required (run agentmesh join first)")
	}
	id, err := c.verifier.Verify(r.TLS.PeerCertificates, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return who, pki.ReasonOf(err), fmt.Errorf("client certificate refused: %w", err)
	}
	who.id = id
	// The incarnation names one registration; the certificate must be of
	// that registration's identity, and the registration active. A
	// revoked one is said to be revoked, one never known unknown (a
	// coordinator that lost its data, or a node of another mesh with this
	// CA), so that the node and its operator learn what to do.
	n, err := c.reg.registration(r.Context(), pki.Incarnation(r.TLS.PeerCertificates[0]))
	switch {
	case errors.Is(err, errNotFound) || err == nil && (n.Name != id.Name || n.Kind != id.Kind):
		return who, reason.UnknownPeer, errors.New("this coordinator knows no node of this certificate; join with an auth key")
	case err != nil:
		return who, reason.Internal, fmt.Errorf("authenticate: %w", err)
	case n.Status != netmap.StatusActive:
		return who, reason.Revoked, errors.New("this node has been revoked; join again with a new auth key")
	}
	who.node = n
	return who, "", nil
}

// handleJoin admits a new node. Anybody may call it, so before it reads
// the body it takes one of the source's join tokens and one of the slots
// for joins in flight, and it reads the body within JoinBodyTimeout and
// controlapi.MaxJoinBody; every refusal is audited.
func (c *Coordinator) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req controlapi.JoinRequest
	// The name is the peer's choice and may be anything until it parses:
	// the trail and the answer carry it bounded and escaped.
	shownName := ""
	refuse := func(status int, code reason.Code, outcome audit.Outcome, msg string) {
		ev := c.event(audit.KindAdmin, "", "coordinator")
		ev.Action, ev.Target, ev.SrcAddr = "node.join", shownName, r.RemoteAddr
		ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, code, outcome, msg
		c.cfg.Metrics.Join(code)
		c.refuse(r.Context(), ev)
		if status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status == http.StatusRequestEntityTooLarge {
			closeAfter(w)
		}
		writeError(w, status, code, msg)
	}
	if !c.joinRate.Allow(sourceOf(r)) {
		refuse(http.StatusTooManyRequests, reason.RateLimited, audit.OutcomeRefused, "too many join attempts from this address; wait and try again")
		return
	}
	select {
	case c.joinSlots <- struct{}{}:
		defer func() { <-c.joinSlots }()
	default:
		refuse(http.StatusTooManyRequests, reason.RateLimited, audit.OutcomeRefused, "too many joins in progress; try again shortly")
		return
	}
	if be := readBody(w, r, controlapi.MaxJoinBody, c.limits.JoinBodyTimeout); be != nil {
		refuse(be.status, be.code, be.outcome, be.msg)
		return
	}
	if err := controlapi.Decode(r.Body, controlapi.MaxJoinBody, &req); err != nil {
		refuse(http.StatusBadRequest, reason.BadRequest, audit.OutcomeRejected, "malformed join request: "+peerText(err.Error()))
		return
	}
	shownName = peerText(req.Name)
	name, err := identity.ParseName(req.Name)
	if err != nil {
		refuse(http.StatusBadRequest, reason.BadName, audit.OutcomeRejected, fmt.Sprintf("invalid node name \"%s\" (%s)", shownName, identity.NameRule))
		return
	}
	if name == ServerName {
		refuse(http.StatusBadRequest, reason.BadName, audit.OutcomeRejected, fmt.Sprintf("the name %q is reserved", ServerName))
		return
	}
	if req.IDToken != "" || req.KeyID == "" && isUserCert(r) { // a person joining with --sso (sso.go)
		c.joinSSO(w, r, req, name, refuse)
		return
	}
	if !authkey.ValidID(req.KeyID) {
		refuse(http.StatusBadRequest, reason.BadRequest, audit.OutcomeRejected, "malformed auth key id")
		return
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		refuse(http.StatusBadRequest, reason.BadCSR, audit.OutcomeRejected, err.Error())
		return
	}
	now := c.now()
	var id identity.ID
	n := netmap.Node{Name: name, Incarnation: newIncarnation()}
	spki := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	inc, err := c.reg.join(r.Context(), joinAttempt{keyID: req.KeyID, spki: hex.EncodeToString(spki[:]), decide: func(k keyRecord, retry bool) (netmap.Node, error) {
		switch {
		case !authkey.SecretMatches(req.Secret, k.SecretHash):
			return n, &joinError{reason.KeyUnknown, "auth key is not known to this coordinator"}
		case k.Revoked:
			return n, &joinError{reason.KeyRevoked, "auth key has been revoked"}
		case !now.Before(k.ExpiresAt):
			return n, &joinError{reason.KeyExpired, "auth key expired at " + k.ExpiresAt.Format(time.RFC3339)}
		case !k.Reusable && k.Uses > 0 && !retry:
			return n, &joinError{reason.KeyUsed, "auth key is single-use and has been used already"}
		case req.Kind != "" && req.Kind != k.Kind:
			return n, &joinError{reason.KindNotAllowed, fmt.Sprintf("auth key allows kind %q, not \"%s\"", k.Kind, peerText(req.Kind))}
		case k.Name != "" && k.Name != string(name):
			return n, &joinError{reason.NameNotAllowed, fmt.Sprintf("auth key is for the name %q only", k.Name)}
		}
		var err error
		if id, err = identity.New(c.td, identity.Kind(k.Kind), name); err != nil {
			return n, err
		}
		if n.Tags, err = identity.ParseTags(k.Tags); err != nil {
			return n, fmt.Errorf("auth key %s: %w", k.ID, err)
		}
		n.Kind = id.Kind
		return n, nil
	}}, now)
	var je *joinError
	if errors.As(err, &je) {
		refuse(http.StatusForbidden, je.code, audit.OutcomeRefused, je.msg)
		return
	}
	if err != nil {
		c.internalError(w, r, "join", err)
		return
	}
	detail := "key " + req.KeyID
	if inc != n.Incarnation {
		detail += "; the same node again (same key pair): its earlier join had committed, its answer was lost"
	}
	n.Incarnation = inc
	n.Kind = id.Kind
	c.admitJoined(w, r, n, id, csr, now, detail)
}

// admitJoined finishes a join the registry recorded (with an auth key, or
// by a person with --sso): the certificate, the audit event, the publish
// and the answer with the node's first netmap.
func (c *Coordinator) admitJoined(w http.ResponseWriter, r *http.Request, n netmap.Node, id identity.ID, csr *x509.CertificateRequest, now time.Time, detail string) {
	cert, der, err := c.ca.Issue(csr, pki.IssueRequest{ID: id, Incarnation: n.Incarnation, TTL: c.cfg.CertTTL, Now: now})
	if err != nil {
		c.internalError(w, r, "join: issue", err)
		return
	}
	c.certIssued(r.Context(), n.Incarnation, cert)
	ev := c.event(audit.KindAdmin, id.String(), "coordinator")
	ev.Action, ev.Target, ev.SrcAddr, ev.Decision = "node.join", string(id.Name), r.RemoteAddr, audit.Allow
	ev.Detail = detail
	c.record(r.Context(), ev)
	c.cfg.Metrics.Join(reason.Allowed)
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "join: publish", err)
		return
	}
	n.ID = id
	view, err := c.viewFor(n)
	if err != nil {
		c.internalError(w, r, "join: view", err)
		return
	}
	writeJSON(w, http.StatusOK, controlapi.CertResponse{
		Certificate: string(pki.EncodeCertPEM(&x509.Certificate{Raw: der})),
		CABundle:    string(pki.EncodeCertPEM(c.ca.Certificate())),
		Netmap:      view,
	})
}

func (c *Coordinator) handleRenew(w http.ResponseWriter, r *http.Request, who caller) {
	renewed := false
	defer func() { c.cfg.Metrics.Renewal(renewed) }()
	var req controlapi.RenewRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed renew request: "+err.Error())
		return
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		writeError(w, http.StatusBadRequest, reason.BadCSR, err.Error())
		return
	}
	cert, der, err := c.ca.Issue(csr, pki.IssueRequest{ID: who.id, Incarnation: who.node.Incarnation, TTL: c.cfg.CertTTL, Now: c.now()})
	if err != nil {
		c.internalError(w, r, "renew", err)
		return
	}
	c.certIssued(r.Context(), who.node.Incarnation, cert)
	c.reg.touch(r.Context(), who.node.Incarnation, c.now())
	renewed = true
	writeJSON(w, http.StatusOK, controlapi.CertResponse{
		Certificate: string(pki.EncodeCertPEM(&x509.Certificate{Raw: der})),
		CABundle:    string(pki.EncodeCertPEM(c.ca.Certificate())),
	})
}

// servingMargin is how much longer than one long poll a serving node may
// go without a netmap request before it counts as gone: the time between
// one poll's answer and the next request, and the watch's retry backoff
// (at most 10 s) after a failed one.
const servingMargin = 15 * time.Second

// serving reports whether the node n serves at now: a tool or model node,
// active, with a registered address, that has watched its netmap within
// one long poll plus servingMargin. A gateway's node watches continuously
// (each request of the long poll updates its last seen), so a longer
// silence means it stopped, whatever address it left registered. This is
// the one place the rule is made.
func (c *Coordinator) serving(n netmap.Node, now time.Time) bool {
	return n.Kind.Serves() && n.Status == netmap.StatusActive && len(n.Addrs) > 0 &&
		!n.LastSeen.IsZero() && now.Sub(n.LastSeen) <= c.cfg.LongPoll+servingMargin
}

// handleNetmap answers at once when the caller's version is older than the
// current one, and otherwise waits for the next change (long poll): 204
// means "nothing new, ask again".
func (c *Coordinator) handleNetmap(w http.ResponseWriter, r *http.Request, who caller) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	if since >= 0 {
		// A watch (see serving). since=-1 is a one-off look, such as
		// 'agentmesh status' takes: no sign that the node runs.
		c.reg.touch(r.Context(), who.node.Incarnation, c.now())
	}
	timer := time.NewTimer(c.cfg.LongPoll)
	defer timer.Stop()
	for {
		c.mu.Lock()
		cur, changed := c.current, c.changed
		c.mu.Unlock()
		if cur.Version != since {
			view, err := c.viewFor(who.node.Node)
			if err != nil {
				c.internalError(w, r, "netmap", err)
				return
			}
			writeJSON(w, http.StatusOK, view)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (c *Coordinator) handleRegister(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.RegisterRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed register request: "+err.Error())
		return
	}
	if !who.id.Kind.Serves() {
		writeError(w, http.StatusForbidden, reason.NotServingKind, "only tool and model nodes serve")
		return
	}
	if len(req.Addrs) > 16 {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "too many addresses")
		return
	}
	for _, a := range req.Addrs {
		if _, _, err := splitHostPort(a); err != nil {
			writeError(w, http.StatusBadRequest, reason.BadAddress, fmt.Sprintf("address \"%s\": %v", peerText(a), err))
			return
		}
	}
	if equalStrings(who.node.Addrs, req.Addrs) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := c.reg.setAddrs(r.Context(), string(who.id.Name), req.Addrs); err != nil {
		c.internalError(w, r, "register", err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "register: publish", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handleKeyCreate(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.KeyCreateRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed key request: "+err.Error())
		return
	}
	if req.Kind == "" {
		req.Kind = string(identity.KindAgent)
	}
	kind, err := identity.ParseKind(req.Kind)
	if err != nil {
		writeError(w, http.StatusBadRequest, reason.BadKind, err.Error())
		return
	}
	tags, err := identity.ParseTags(req.Tags)
	if err != nil {
		writeError(w, http.StatusBadRequest, reason.BadTags, err.Error())
		return
	}
	if req.Name != "" {
		if _, err := identity.ParseName(req.Name); err != nil {
			writeError(w, http.StatusBadRequest, reason.BadName, peerText(err.Error()))
			return
		}
		if req.Name == ServerName {
			writeError(w, http.StatusBadRequest, reason.BadName, fmt.Sprintf("the name %q is reserved", ServerName))
			return
		}
	}
	if req.Expiry == 0 {
		req.Expiry = DefaultKeyExpiry
	}
	if req.Expiry < time.Minute || req.Expiry > MaxKeyExpiry {
		writeError(w, http.StatusBadRequest, reason.BadExpiry, fmt.Sprintf("expiry must be between 1m and %v", MaxKeyExpiry))
		return
	}
	k, err := authkey.New(c.url, c.ca.Fingerprint())
	if err != nil {
		c.internalError(w, r, "keys: create", err)
		return
	}
	now := c.now()
	info := controlapi.KeyInfo{ID: k.ID, Kind: string(kind), Tags: identity.TagStrings(tags), Reusable: req.Reusable,
		CreatedAt: now.UTC(), ExpiresAt: now.Add(req.Expiry).UTC(), CreatedBy: who.actor(), Name: req.Name}
	if err := c.reg.createKey(r.Context(), keyRecord{KeyInfo: info, SecretHash: authkey.HashSecret(k.Secret)}); err != nil {
		c.internalError(w, r, "keys: create", err)
		return
	}
	detail := fmt.Sprintf("kind=%s tags=%s reusable=%v expires=%s", kind, strings.Join(info.Tags, ","), req.Reusable, info.ExpiresAt.Format(time.RFC3339))
	if req.Name != "" {
		detail += " name=" + req.Name
	}
	c.adminEvent(r, who, "keys.create", k.ID, detail)
	writeJSON(w, http.StatusOK, controlapi.KeyCreateResponse{Key: k.String(), Info: info})
}

func (c *Coordinator) handleKeyList(w http.ResponseWriter, r *http.Request, who caller) {
	keys, err := c.reg.listKeys(r.Context())
	if err != nil {
		c.internalError(w, r, "keys: list", err)
		return
	}
	writeJSON(w, http.StatusOK, keys)
}

func (c *Coordinator) handleKeyRevoke(w http.ResponseWriter, r *http.Request, who caller) {
	id := r.PathValue("id")
	if !authkey.ValidID(id) {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed key id")
		return
	}
	if err := c.reg.revokeKey(r.Context(), id); errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, "no key with id "+id)
		return
	} else if err != nil {
		c.internalError(w, r, "keys: revoke", err)
		return
	}
	c.adminEvent(r, who, "keys.revoke", id, "")
	c.cfg.Metrics.RevokedKey()
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handleNodeList(w http.ResponseWriter, r *http.Request, who caller) {
	rows, err := c.reg.nodes(r.Context(), time.Time{})
	if err != nil {
		c.internalError(w, r, "nodes: list", err)
		return
	}
	now := c.now()
	out := make([]controlapi.NodeInfo, 0, len(rows))
	for _, n := range rows {
		id, _ := identity.New(c.td, n.Kind, n.Name)
		out = append(out, controlapi.NodeInfo{Name: string(n.Name), Kind: string(n.Kind), ID: id.String(), Tags: identity.TagStrings(n.Tags),
			Status: string(n.Status), Addrs: n.Addrs, Serving: c.serving(n.Node, now), LastSeen: n.LastSeen, Created: n.CreatedAt,
			CertExpires: n.CertExpires, Owner: string(n.Owner)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (c *Coordinator) handleNodeTag(w http.ResponseWriter, r *http.Request, who caller) {
	name := r.PathValue("name")
	var req controlapi.TagRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed tag request: "+err.Error())
		return
	}
	tags, err := identity.ParseTags(req.Tags)
	if err != nil {
		writeError(w, http.StatusBadRequest, reason.BadTags, err.Error())
		return
	}
	if err := c.reg.setTags(r.Context(), name, identity.TagStrings(tags)); errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, fmt.Sprintf("no active node named %q", name))
		return
	} else if err != nil {
		c.internalError(w, r, "nodes: tag", err)
		return
	}
	c.adminEvent(r, who, "nodes.tag", name, strings.Join(identity.TagStrings(tags), ","))
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "nodes: tag: publish", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handleNodeRevoke(w http.ResponseWriter, r *http.Request, who caller) {
	name := r.PathValue("name")
	if name == string(who.id.Name) {
		writeError(w, http.StatusBadRequest, reason.SelfRevoke, "refusing to revoke the identity making the request")
		return
	}
	if err := c.reg.revokeNode(r.Context(), name, c.now()); errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, fmt.Sprintf("no active node named %q", name))
		return
	} else if err != nil {
		c.internalError(w, r, "nodes: revoke", err)
		return
	}
	c.adminEvent(r, who, "nodes.revoke", name, "")
	c.cfg.Metrics.RevokedNode()
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "nodes: revoke: publish", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handlePolicyApply(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.PolicyApplyRequest
	if err := controlapi.Decode(r.Body, policy.MaxDocumentBytes+64<<10, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed policy request: "+err.Error())
		return
	}
	c.applyPolicy(w, r, who, req.Document, "")
}

func (c *Coordinator) applyPolicy(w http.ResponseWriter, r *http.Request, who caller, doc, note string) {
	if _, err := policy.Compile([]byte(doc), "pending"); err != nil {
		ev := c.event(audit.KindAdmin, who.actor(), "coordinator")
		ev.Action, ev.Decision, ev.Reason, ev.Outcome, ev.Detail = "policy.apply", audit.Deny, reason.InvalidPolicy, audit.OutcomeRejected, err.Error()
		c.record(r.Context(), ev)
		writeError(w, http.StatusUnprocessableEntity, reason.InvalidPolicy, err.Error())
		return
	}
	prev, err := c.reg.policy(r.Context(), 0)
	if err != nil {
		c.internalError(w, r, "policy: apply", err)
		return
	}
	v, err := c.reg.addPolicy(r.Context(), doc, who.actor(), note, c.now())
	if err != nil {
		c.internalError(w, r, "policy: apply", err)
		return
	}
	detail := textdiff.Lines(prev.Document, doc)
	if note != "" {
		detail = note + "\n" + detail
	}
	c.adminEvent(r, who, "policy.apply", "v"+strconv.FormatInt(v, 10), detail)
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "policy: publish", err)
		return
	}
	writeJSON(w, http.StatusOK, controlapi.PolicyVersion{Version: v, AppliedAt: c.now().UTC(), AppliedBy: who.actor(), Note: note})
}

func (c *Coordinator) handlePolicyGet(w http.ResponseWriter, r *http.Request, who caller) {
	var version int64
	if s := r.URL.Query().Get("version"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 1 {
			writeError(w, http.StatusBadRequest, reason.BadRequest, "version must be a positive number")
			return
		}
		version = v
	}
	p, err := c.reg.policy(r.Context(), version)
	if errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, fmt.Sprintf("no policy version %d", version))
		return
	} else if err != nil {
		c.internalError(w, r, "policy: get", err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (c *Coordinator) handlePolicyHistory(w http.ResponseWriter, r *http.Request, who caller) {
	h, err := c.reg.policyHistory(r.Context())
	if err != nil {
		c.internalError(w, r, "policy: history", err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (c *Coordinator) handlePolicyRollback(w http.ResponseWriter, r *http.Request, who caller) {
	var req controlapi.RollbackRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed rollback request: "+err.Error())
		return
	}
	p, err := c.reg.policy(r.Context(), req.Version)
	if errors.Is(err, errNotFound) || req.Version < 1 {
		writeError(w, http.StatusNotFound, reason.NotFound, fmt.Sprintf("no policy version %d", req.Version))
		return
	} else if err != nil {
		c.internalError(w, r, "policy: rollback", err)
		return
	}
	c.applyPolicy(w, r, who, p.Document, fmt.Sprintf("rollback to v%d", req.Version))
}

// publish makes every registry change committed before it was called
// visible to every watcher: a netmap with a new version, built from the
// registry's memory copy (nodeset.go), never from a read of the whole
// database. Publishes run one at a time, and a caller whose change a
// publish that started after it has already included returns at once: a
// burst of changes (a join storm) costs one publish per publish time, not
// one per change, and no change waits for more than the publish under
// way and its own. There is no timer: a lone change, a revocation above
// all, is published at once.
//
// The publish completes even if the request that asked for it goes away:
// the change is committed, and watchers must hear of it.
func (c *Coordinator) publish(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	want := c.reg.changes()
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	coordinators := netmap.SortCoordinators(c.coordinatorURLs())
	if c.current != nil && c.published >= want && slices.Equal(c.current.Coordinators, coordinators) {
		return nil
	}
	st, err := c.reg.snapshot(ctx, c.now())
	if err != nil {
		return err
	}
	p := st.policy
	pol := c.pol
	if c.current == nil || c.current.Policy.Version != p.Version {
		pol = nil
		if p.Version > 0 {
			// Apply compiled it already; a failure here means the stored
			// document changed under us, and gateways get an empty policy.
			compiled, err := policy.Compile([]byte(p.Document), strconv.FormatInt(p.Version, 10))
			if err != nil {
				c.log.Error("coordinator: the stored policy does not compile; gateways get an empty one", "version", p.Version, "err", err)
			}
			pol = compiled
		}
	}
	v, err := c.reg.bumpNetmapVersion(ctx)
	if err != nil {
		return err
	}
	nm := &netmap.Netmap{
		Version:     v,
		TrustDomain: c.td,
		CABundle:    string(pki.EncodeCertPEM(c.ca.Certificate())),
		AuditKey:    string(audit.EncodePublicKey(c.auditPub)),
		CertTTL:     c.cfg.CertTTL,
		Nodes:       st.nodes,
		Policy:      netmap.Policy{Version: p.Version, Document: p.Document},
		// Coordinators: nodes learn where else to turn from their view.
		Coordinators: coordinators,
	}
	var shadowPol *policy.Policy
	nm.Shadow, shadowPol = c.publishShadow(st.shadow)
	c.mu.Lock()
	c.current, c.pol, c.shadowPol = nm, pol, shadowPol
	c.deleg = newDelegView(st.deleg, c.now())
	c.index = &meshIndex{of: nm, services: st.services}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	c.published = st.seq
	return nil
}

func (c *Coordinator) event(kind audit.Kind, src, dst string) audit.Event {
	if dst == "coordinator" {
		id, _ := identity.New(c.td, identity.KindAdmin, ServerName)
		dst = id.String()
	}
	ev := audit.Event{Kind: kind, Src: src, Dst: dst}
	ev.Stamp(c.now())
	return ev
}

func (c *Coordinator) adminEvent(r *http.Request, who caller, action, target, detail string) {
	ev := c.event(audit.KindAdmin, who.actor(), "coordinator")
	ev.SrcAddr, ev.Action, ev.Target, ev.Detail, ev.Decision = who.addr, action, target, detail, audit.Allow
	c.record(r.Context(), ev)
}

// record appends an event to the audit store. A failure is logged loudly;
// the store is local, so it only fails when the database does.
func (c *Coordinator) record(ctx context.Context, ev audit.Event) {
	if err := c.appendEvent(ctx, &ev); err != nil {
		c.log.Error("coordinator: audit append failed", "err", err, "event", ev.ID, "action", ev.Action)
	}
}

func (c *Coordinator) appendEvent(ctx context.Context, ev *audit.Event) error {
	_, err := c.audit.Append(context.WithoutCancel(ctx), []audit.Event{*ev})
	if err == nil {
		c.alerts.observe("", []audit.Event{*ev})
	}
	return err
}

// refuse records a refused attempt through the refusal aggregator, so a
// client that is refused over and over writes a count, not a row per
// attempt. A failure is logged; the attempt stays counted.
func (c *Coordinator) refuse(ctx context.Context, ev audit.Event) {
	if _, err := c.refusals.Refuse(ctx, &ev); err != nil {
		c.log.Error("coordinator: audit of a refusal failed", "err", err, "reason", ev.Reason)
	}
}

func (c *Coordinator) internalError(w http.ResponseWriter, r *http.Request, op string, err error) {
	ref := audit.NewID()[:12]
	c.log.Error("coordinator: "+op, "err", err, "ref", ref)
	writeError(w, http.StatusInternalServerError, reason.Internal, "internal error (ref "+ref+"; see the coordinator's log)")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code reason.Code, msg string) {
	writeJSON(w, status, controlapi.Error{Error: msg, Code: string(code)})
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
