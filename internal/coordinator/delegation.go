package coordinator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/sso"
	"github.com/agentmesh/agentmesh/internal/store"
)

// Delegation: agents acting for people (package delegation says what a
// delegation is and how gateways check it). The coordinator issues them
// (signed with the CA key), records them in the delegations table, and
// tells the mesh through the netmap:
//
//   - the agent node a delegation is issued to finds it in its own view's
//     Delegations while it is live (unexpired, unrevoked, issued to its
//     current incarnation), for its connector to present;
//   - gateways find revoked delegation IDs and revoked people in
//     RevokedDelegations and RevokedUsers, each for as long as a
//     delegation it revokes could still be valid (plus revokedMargin).
//
// Each issue or revocation is a registry change like a node's: it bumps
// the netmap, so watching nodes learn it within the long poll, the bound
// node revocation has. Issue is refused, with its reason code and an audit
// event, when the target is not an active agent node, the lifetime is out
// of range, the chain would be too deep, the scope covers a tool the
// grantor may not call (or names none the coordinator knows), or the
// parent or the person is revoked. The lists a netmap carries are bounded
// by refusing issue: at most netmap.MaxRevocations delegations live in the
// mesh at once (so no revocation list can be longer), at most
// netmap.MaxDelegations per agent.
//
// A person's revocation stands until an admin restores them: the person
// can sign in, join with --sso or delegate again only then. Delegations
// revoked stay revoked.

// delegationsTable is the registry's step 10 (the same on both databases).
const delegationsTable = `
CREATE TABLE delegations (
	id          TEXT PRIMARY KEY,
	parent      TEXT NOT NULL,
	person      TEXT NOT NULL,
	grantor     TEXT NOT NULL,
	agent       TEXT NOT NULL,
	incarnation TEXT NOT NULL,
	depth       INTEGER NOT NULL,
	tools       TEXT NOT NULL,
	chain       TEXT NOT NULL,
	token       TEXT NOT NULL,
	issued_at   BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL,
	revoked_at  BIGINT,
	revoked_by  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX delegations_parent ON delegations(parent);
CREATE INDEX delegations_person ON delegations(person);
CREATE INDEX delegations_expires ON delegations(expires_at);
CREATE TABLE revoked_users (
	email      TEXT PRIMARY KEY,
	revoked_at BIGINT NOT NULL,
	revoked_by TEXT NOT NULL,
	until_at   BIGINT NOT NULL
);
`

// changedDelegations is the cluster notification of a delegation change.
const changedDelegations = "delegations"

// revokedMargin is how long past the expiry of the delegations it could
// affect a revocation stays in netmaps: longer than the clock skew any
// gateway allows (delegation.DefaultSkew).
const revokedMargin = 5 * time.Minute

// delegationKeep is how long an expired delegation stays on record (the
// audit trail keeps its history).
const delegationKeep = 7 * 24 * time.Hour

// delegRow is one row of the delegations table.
type delegRow struct {
	id, parent, person, grantor, agent, incarnation string
	depth                                           int
	tools                                           []string
	chain                                           []delegation.Link
	token                                           string
	issued, expires                                 time.Time
	revokedAt                                       time.Time // zero: not revoked
	revokedBy                                       string
}

func (d *delegRow) api() controlapi.Delegation {
	out := controlapi.Delegation{ID: d.id, Parent: d.parent, User: d.person, Grantor: d.grantor, Agent: d.agent,
		Incarnation: d.incarnation, Depth: d.depth, Tools: d.tools, IssuedAt: d.issued, ExpiresAt: d.expires, RevokedBy: d.revokedBy}
	if out.Tools == nil {
		out.Tools = []string{}
	}
	if !d.revokedAt.IsZero() {
		t := d.revokedAt
		out.RevokedAt = &t
	}
	return out
}

const delegColumns = `id, parent, person, grantor, agent, incarnation, depth, tools, chain, token, issued_at, expires_at, revoked_at, revoked_by`

func scanDeleg(s rowScanner) (delegRow, error) {
	var d delegRow
	var tools, chain string
	var issued, expires int64
	var revoked sql.NullInt64
	if err := s.Scan(&d.id, &d.parent, &d.person, &d.grantor, &d.agent, &d.incarnation, &d.depth, &tools, &chain, &d.token,
		&issued, &expires, &revoked, &d.revokedBy); err != nil {
		return d, err
	}
	if err := json.Unmarshal([]byte(tools), &d.tools); err != nil {
		return d, fmt.Errorf("delegation %s: tools: %w", d.id, err)
	}
	if err := json.Unmarshal([]byte(chain), &d.chain); err != nil {
		return d, fmt.Errorf("delegation %s: chain: %w", d.id, err)
	}
	d.issued, d.expires = time.Unix(0, issued).UTC(), time.Unix(0, expires).UTC()
	if revoked.Valid {
		d.revokedAt = time.Unix(0, revoked.Int64).UTC()
	}
	return d, nil
}

func queryDelegs(ctx context.Context, q querier, where string, args ...any) ([]delegRow, error) {
	return queryRows(ctx, q, scanDeleg, `SELECT `+delegColumns+` FROM delegations `+where, args...)
}

// revokedUser is a row of revoked_users: the person stays revoked; until
// is the latest expiry of a delegation rooted at them when they were.
type revokedUser struct {
	email string
	until time.Time
}

// delegState is the registry's memory copy of what netmaps need: the
// delegations that may still be valid (revoked or not) and the revoked
// people whose entry may still matter.
type delegState struct {
	live  []delegRow
	users []revokedUser
}

// loadDelegations rereads delegState from the database. r.mu is held.
func (r *registry) loadDelegations(ctx context.Context, now time.Time) error {
	since := now.Add(-revokedMargin).UnixNano()
	live, err := queryDelegs(ctx, r.db, `WHERE expires_at > $1 ORDER BY issued_at, id`, since)
	if err != nil {
		return err
	}
	users, err := queryRows(ctx, r.db, func(s rowScanner) (revokedUser, error) {
		var u revokedUser
		var until int64
		err := s.Scan(&u.email, &until)
		u.until = time.Unix(0, until).UTC()
		return u, err
	}, `SELECT email, until_at FROM revoked_users WHERE until_at > $1 ORDER BY email`, since)
	if err != nil {
		return err
	}
	r.mem.deleg = delegState{live: live, users: users}
	r.mem.seq++
	return nil
}

// refreshDelegations rereads them after another coordinator's change.
func (r *registry) refreshDelegations(ctx context.Context, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadDelegations(ctx, now); err != nil {
		r.doubt()
	}
}

// writeDelegations runs write in a transaction, tells the other
// coordinators, and rereads the memory copy, as writeNode does for nodes.
func (r *registry) writeDelegations(ctx context.Context, now time.Time, write func(*sql.Tx) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	tx, err := r.db.BeginWrite(ctx, store.LockRegistry)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := write(tx); err != nil {
		return err
	}
	if err := r.db.Notify(ctx, tx, changeChannel, r.notifyAs+" "+changedDelegations); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		r.doubt()
		return err
	}
	if err := r.loadDelegations(ctx, now); err != nil {
		r.doubt()
	}
	return nil
}

// delegCounts is how many delegations live in the mesh, and how many
// unrevoked ones are issued to the registration incarnation.
func (r *registry) delegCounts(incarnation string) (mesh, agent int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.mem.deleg.live {
		if d := &r.mem.deleg.live[i]; d.incarnation == incarnation && d.revokedAt.IsZero() {
			agent++
		}
	}
	return len(r.mem.deleg.live), agent
}

func (r *registry) delegationByID(ctx context.Context, id string) (delegRow, error) {
	d, err := scanDeleg(r.db.QueryRowContext(ctx, `SELECT `+delegColumns+` FROM delegations WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, errNotFound
	}
	return d, err
}

func (r *registry) userRevoked(ctx context.Context, email string) (bool, error) {
	var n int
	err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM revoked_users WHERE email = $1`, email).Scan(&n)
	return n > 0, err
}

func (r *registry) addDelegation(ctx context.Context, d delegRow, now time.Time) error {
	tools, _ := json.Marshal(d.tools)
	chain, _ := json.Marshal(d.chain)
	return r.writeDelegations(ctx, now, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM delegations WHERE expires_at < $1`, now.Add(-delegationKeep).UnixNano()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO delegations(`+delegColumns+`) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, '')`,
			d.id, d.parent, d.person, d.grantor, d.agent, d.incarnation, d.depth, string(tools), string(chain), d.token,
			d.issued.UnixNano(), d.expires.UnixNano())
		return err
	})
}

// revokeTx revokes the delegations ids, those not revoked yet, and
// returns them.
func revokeTx(ctx context.Context, tx *sql.Tx, ids []string, by string, now time.Time) ([]string, error) {
	var out []string
	for _, id := range ids {
		res, err := tx.ExecContext(ctx, `UPDATE delegations SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at IS NULL`, now.UnixNano(), by, id)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			out = append(out, id)
		}
	}
	return out, nil
}

// revokeDelegation revokes id and every delegation made from it.
func (r *registry) revokeDelegation(ctx context.Context, id, by string, now time.Time) ([]string, error) {
	var revoked []string
	err := r.writeDelegations(ctx, now, func(tx *sql.Tx) error {
		ids, err := queryRows(ctx, tx, scanString, `WITH RECURSIVE sub(id) AS (
			SELECT id FROM delegations WHERE id = $1
			UNION SELECT d.id FROM delegations d JOIN sub ON d.parent = sub.id)
			SELECT id FROM sub`, id)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return errNotFound
		}
		// The delegation itself first.
		slices.SortStableFunc(ids, func(a, b string) int {
			switch {
			case a == id:
				return -1
			case b == id:
				return 1
			}
			return 0
		})
		revoked, err = revokeTx(ctx, tx, ids, by, now)
		return err
	})
	return revoked, err
}

// revokeUser ends a person's logins, revokes every delegation rooted at
// them, and records them revoked.
func (r *registry) revokeUser(ctx context.Context, email, by string, now time.Time) (controlapi.RevokeResult, error) {
	var out controlapi.RevokeResult
	err := r.writeDelegations(ctx, now, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM logins WHERE email = $1`, email)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		out.Logins = int(n)
		rows, err := queryDelegs(ctx, tx, `WHERE person = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY issued_at, id`, email, now.UnixNano())
		if err != nil {
			return err
		}
		until := now
		ids := make([]string, 0, len(rows))
		for _, d := range rows {
			ids = append(ids, d.id)
			if d.expires.After(until) {
				until = d.expires
			}
		}
		if out.Revoked, err = revokeTx(ctx, tx, ids, by, now); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO revoked_users(email, revoked_at, revoked_by, until_at) VALUES($1, $2, $3, $4)
			ON CONFLICT (email) DO UPDATE SET revoked_at = $2, revoked_by = $3, until_at = $4`, email, now.UnixNano(), by, until.UnixNano())
		return err
	})
	if out.Revoked == nil {
		out.Revoked = []string{}
	}
	return out, err
}

// restoreUser lifts a person's revocation; errNotFound when there is none.
func (r *registry) restoreUser(ctx context.Context, email string, now time.Time) error {
	return r.writeDelegations(ctx, now, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM revoked_users WHERE email = $1`, email)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errNotFound
		}
		return nil
	})
}

// delegView is what publish makes of delegState for views: gateways'
// revocation lists, and each agent registration's live tokens.
type delegView struct {
	revokedIDs, revokedUsers []string
	byIncarnation            map[string][]delegRow
}

func newDelegView(st delegState, now time.Time) *delegView {
	v := &delegView{revokedIDs: []string{}, revokedUsers: []string{}, byIncarnation: map[string][]delegRow{}}
	users := map[string]bool{}
	for _, u := range st.users {
		users[u.email] = true
		if u.until.Add(revokedMargin).After(now) {
			v.revokedUsers = append(v.revokedUsers, u.email)
		}
	}
	for _, d := range st.live {
		if !d.revokedAt.IsZero() {
			if d.expires.Add(revokedMargin).After(now) {
				v.revokedIDs = append(v.revokedIDs, d.id)
			}
			continue
		}
		if d.expires.After(now) && !users[d.person] {
			v.byIncarnation[d.incarnation] = append(v.byIncarnation[d.incarnation], d)
		}
	}
	slices.Sort(v.revokedIDs)
	return v
}

// addDelegations puts into the view nm of self its part of v.
func addDelegations(nm *netmap.Netmap, self netmap.Node, v *delegView, now time.Time) {
	if v == nil {
		return
	}
	if self.Kind.Serves() {
		nm.RevokedDelegations, nm.RevokedUsers = v.revokedIDs, v.revokedUsers
	}
	if self.Kind != identity.KindAgent {
		return
	}
	for _, d := range v.byIncarnation[self.Incarnation] {
		if d.expires.After(now) && len(nm.Delegations) < netmap.MaxDelegations {
			nm.Delegations = append(nm.Delegations, d.token)
		}
	}
}

func (c *Coordinator) delegationRoutes(mux *http.ServeMux) {
	const small = controlapi.MaxBody
	mux.HandleFunc("POST "+controlapi.PathDelegations, c.personOrNode(small, c.handleDelegate))
	mux.HandleFunc("GET "+controlapi.PathDelegations, c.personOrNode(0, c.handleDelegationList))
	mux.HandleFunc("POST "+controlapi.PathDelegations+"/{id}/revoke", c.personOrNode(small, c.handleDelegationRevoke))
	mux.HandleFunc("POST "+controlapi.PathUsers+"/{email}/revoke", c.admin(c.withBody(small, c.handleUserRevoke)))
	mux.HandleFunc("POST "+controlapi.PathUsers+"/{email}/restore", c.admin(c.withBody(small, c.handleUserRestore)))
}

// principal is who calls a delegation endpoint: a person (by the
// certificate 'agentmesh login' gave them) or a node.
type principal struct {
	who    caller
	person sso.Person // User "" for a node
	admin  bool
}

type principalHandler func(w http.ResponseWriter, r *http.Request, p principal)

// personOrNode authenticates a person's login certificate (as userAdmin
// does, without needing an admin group) or a node's (as node does), then
// reads the body within max (0: none is expected).
func (c *Coordinator) personOrNode(max int64, h principalHandler) http.HandlerFunc {
	body := func(p principal) handler {
		return c.withBody(max, func(w http.ResponseWriter, r *http.Request, _ caller) { h(w, r, p) })
	}
	nodeH := c.node(func(w http.ResponseWriter, r *http.Request, who caller) {
		body(principal{who: who, admin: who.id.Kind == identity.KindAdmin})(w, r, who)
	})
	return func(w http.ResponseWriter, r *http.Request) {
		if !isUserCert(r) {
			nodeH(w, r)
			return
		}
		p, code, msg := c.personOfCert(r)
		who := caller{addr: r.RemoteAddr}
		who.user, _ = identity.NewUserID(c.td, p.User)
		switch {
		case code == reason.Internal:
			c.internalError(w, r, "authenticate user", errors.New(msg))
			return
		case code != "":
			ev := c.event(audit.KindConnection, who.user.String(), "coordinator")
			ev.SrcAddr, ev.Method = r.RemoteAddr, r.Method+" "+r.URL.Path
			ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, code, audit.OutcomeRefused, msg
			c.refuse(r.Context(), ev)
			closeAfter(w)
			writeError(w, http.StatusUnauthorized, code, msg)
			return
		}
		body(principal{who: who, person: p, admin: c.ssoAdmin(p.Groups)})(w, r, who)
	}
}

// delegRefusal is a refused issue: its status, code and message.
type delegRefusal struct {
	status int
	code   reason.Code
	msg    string
}

func refusal(status int, code reason.Code, format string, a ...any) *delegRefusal {
	return &delegRefusal{status, code, fmt.Sprintf(format, a...)}
}

func (c *Coordinator) handleDelegate(w http.ResponseWriter, r *http.Request, p principal) {
	var req controlapi.DelegationRequest
	if err := controlapi.Decode(r.Body, controlapi.MaxBody, &req); err != nil {
		c.delegRefused(r, p, "", refusal(http.StatusBadRequest, reason.BadRequest, "malformed delegation request: %s", peerText(err.Error())))
		writeError(w, http.StatusBadRequest, reason.BadRequest, "malformed delegation request: "+peerText(err.Error()))
		return
	}
	d, ref, err := c.issueDelegation(r.Context(), p, req)
	if err != nil {
		c.internalError(w, r, "delegate", err)
		return
	}
	if ref != nil {
		c.delegRefused(r, p, peerText(req.To), ref)
		writeError(w, ref.status, ref.code, ref.msg)
		return
	}
	ev := c.event(audit.KindAdmin, p.who.actor(), "coordinator")
	ev.Action, ev.Target, ev.SrcAddr, ev.Decision = "delegation.issue", d.id, r.RemoteAddr, audit.Allow
	ev.Detail = fmt.Sprintf("to agent:%s (incarnation %s) for user:%s, depth %d, tools [%s], expires %s, chain %s",
		d.agent, d.incarnation, d.person, d.depth, strings.Join(d.tools, ","), d.expires.Format(time.RFC3339), chainText(d.chain))
	c.record(r.Context(), ev)
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "delegate: publish", err)
		return
	}
	out := d.api()
	out.Token = d.token
	writeJSON(w, http.StatusOK, out)
}

func chainText(chain []delegation.Link) string {
	var b strings.Builder
	for i, l := range chain {
		if i == 0 {
			b.WriteString(l.By)
		}
		b.WriteString(" -> " + l.To)
	}
	return b.String()
}

// delegRefused audits a refused issue.
func (c *Coordinator) delegRefused(r *http.Request, p principal, target string, ref *delegRefusal) {
	ev := c.event(audit.KindAdmin, p.who.actor(), "coordinator")
	ev.Action, ev.Target, ev.SrcAddr = "delegation.issue", target, r.RemoteAddr
	ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, ref.code, audit.OutcomeRefused, ref.msg
	if ref.status == http.StatusBadRequest {
		ev.Outcome = audit.OutcomeRejected
	}
	c.record(r.Context(), ev)
}

// issueDelegation decides a request and, when it is granted, signs and
// records the delegation.
func (c *Coordinator) issueDelegation(ctx context.Context, p principal, req controlapi.DelegationRequest) (delegRow, *delegRefusal, error) {
	now := c.now()
	var d delegRow
	name, err := identity.ParseName(strings.TrimPrefix(req.To, "agent:"))
	if err != nil {
		return d, refusal(http.StatusBadRequest, reason.BadName, "--to %q: want agent:NAME", peerText(req.To)), nil
	}
	target, err := c.reg.activeNode(ctx, name)
	if errors.Is(err, errNotFound) {
		return d, refusal(http.StatusNotFound, reason.NotFound, "no active node is named %q", name), nil
	}
	if err != nil {
		return d, nil, err
	}
	if target.Kind != identity.KindAgent {
		return d, refusal(http.StatusBadRequest, reason.KindNotAllowed, "%s:%s is not an agent node: only agents act for people", target.Kind, name), nil
	}
	targetID, err := identity.New(c.td, identity.KindAgent, name)
	if err != nil {
		return d, nil, err
	}
	if req.TTL < delegation.MinTTL || req.TTL > delegation.MaxTTL {
		return d, refusal(http.StatusBadRequest, reason.BadExpiry, "--ttl %v is out of range: %v to %v", req.TTL, delegation.MinTTL, delegation.MaxTTL), nil
	}
	if len(req.Tools) > delegation.MaxTools {
		return d, refusal(http.StatusBadRequest, reason.BadRequest, "%d tools, at most %d", len(req.Tools), delegation.MaxTools), nil
	}
	d = delegRow{incarnation: target.Incarnation, agent: string(name), issued: now.Truncate(time.Second),
		tools: slices.Clone(req.Tools)}
	d.expires = d.issued.Add(req.TTL.Truncate(time.Second))
	var grantor policy.Node // the grantor agent's own rights, for a sub-delegation
	subAgent := false
	switch {
	case p.person.User != "":
		if req.From != "" {
			return d, refusal(http.StatusBadRequest, reason.BadRequest, "a person delegates directly; --from is for an agent node sub-delegating"), nil
		}
		d.person, d.grantor = string(p.person.User), p.person.User.Selector()
		d.chain = []delegation.Link{{By: d.grantor, To: targetID.String()}}
	case req.From == "":
		return d, refusal(http.StatusForbidden, reason.BadRequest, "a node delegates only from a delegation it holds (--from ID); people delegate with their login (agentmesh login)"), nil
	default:
		parent, err := c.reg.delegationByID(ctx, req.From)
		if errors.Is(err, errNotFound) {
			return d, refusal(http.StatusNotFound, reason.NotFound, "no delegation %q", peerText(req.From)), nil
		}
		if err != nil {
			return d, nil, err
		}
		if p.who.id.Kind != identity.KindAgent || parent.agent != string(p.who.id.Name) || parent.incarnation != p.who.node.Incarnation {
			return d, refusal(http.StatusForbidden, reason.DelegationWrongAgent, "delegation %s is not issued to this node", parent.id), nil
		}
		if !parent.revokedAt.IsZero() {
			return d, refusal(http.StatusForbidden, reason.DelegationRevoked, "delegation %s was revoked at %s", parent.id, parent.revokedAt.Format(time.RFC3339)), nil
		}
		if !parent.expires.After(now) {
			return d, refusal(http.StatusForbidden, reason.DelegationExpired, "delegation %s expired at %s", parent.id, parent.expires.Format(time.RFC3339)), nil
		}
		if parent.depth+1 > delegation.MaxDepth {
			return d, refusal(http.StatusForbidden, reason.DelegationTooDeep, "a chain of %d links is longer than %d", parent.depth+1, delegation.MaxDepth), nil
		}
		if d.expires.After(parent.expires) {
			return d, refusal(http.StatusForbidden, reason.DelegationExceedsGrantor, "it would outlive delegation %s, which expires at %s: ask for a shorter --ttl",
				parent.id, parent.expires.Format(time.RFC3339)), nil
		}
		if len(d.tools) == 0 {
			d.tools = slices.Clone(parent.tools)
		} else if len(parent.tools) > 0 {
			for _, e := range d.tools {
				if !scopeCovers(parent.tools, e) {
					return d, refusal(http.StatusForbidden, reason.DelegationExceedsGrantor, "%q is outside delegation %s's tools [%s]", peerText(e), parent.id, strings.Join(parent.tools, ",")), nil
				}
			}
		}
		d.parent, d.person, d.grantor = parent.id, parent.person, p.who.id.String()
		d.chain = append(slices.Clone(parent.chain), delegation.Link{By: p.who.id.String(), To: targetID.String()})
		grantor, subAgent = p.who.node.PolicyNode(), true
	}
	d.depth = len(d.chain)
	if revoked, err := c.reg.userRevoked(ctx, d.person); err != nil {
		return d, nil, err
	} else if revoked {
		return d, refusal(http.StatusForbidden, reason.DelegationRevoked, "user:%s has been revoked", d.person), nil
	}
	if ref, err := c.checkScope(ctx, d.person, grantor, subAgent, d.tools); ref != nil || err != nil {
		return d, ref, err
	}
	mesh, agent := c.reg.delegCounts(d.incarnation)
	if mesh >= netmap.MaxRevocations || agent >= netmap.MaxDelegations {
		return d, refusal(http.StatusTooManyRequests, reason.RateLimited, "too many live delegations (%d in the mesh, at most %d; %d to agent:%s, at most %d): revoke some or wait for them to expire",
			mesh, netmap.MaxRevocations, agent, name, netmap.MaxDelegations), nil
	}
	if d.id, err = delegation.NewID(); err != nil {
		return d, nil, err
	}
	d.chain[len(d.chain)-1].ID = d.id
	claims := &delegation.Claims{V: 1, TrustDomain: string(c.td), User: d.person, Chain: d.chain, Incarnation: d.incarnation,
		Tools: d.tools, IssuedAt: d.issued.Unix(), Expires: d.expires.Unix()}
	if code, err := claims.Check(); err != nil {
		return d, refusal(http.StatusBadRequest, code, "%v", err), nil
	}
	if d.token, err = delegation.Sign(c.ca, claims); err != nil {
		return d, nil, err
	}
	if err := c.reg.addDelegation(ctx, d, now); err != nil {
		return d, nil, err
	}
	return d, nil, nil
}

// scopeCovers reports whether the scope entry e asks for nothing outside
// scope: an entry of the same service whose tool glob is e's, or matches
// e's tool when e names one tool (no wildcard).
func scopeCovers(scope []string, e string) bool {
	svc, tool, err := delegation.SplitTool(e)
	if err != nil {
		return false
	}
	literal := !strings.ContainsAny(tool, "*?")
	for _, s := range scope {
		ps, pt, err := delegation.SplitTool(s)
		if err != nil || ps != svc {
			continue
		}
		if pt == tool || literal && policy.GlobMatch(pt, tool) {
			return true
		}
	}
	return false
}

// checkScope refuses a scope with an entry that names no tool the
// coordinator knows (its catalog: the tools gateways reported), or covers
// one the person may not call under the active policy (their rights: what
// grants with user:EMAIL or * sources allow them), or, for a
// sub-delegation, one the granting agent may not call itself.
func (c *Coordinator) checkScope(ctx context.Context, person string, grantor policy.Node, subAgent bool, tools []string) (*delegRefusal, error) {
	pol := c.currentPolicy()
	me := policy.Node{Kind: identity.KindAgent, User: person, Tags: []identity.Tag{}}
	for _, e := range tools {
		svc, glob, err := delegation.SplitTool(e)
		if err != nil {
			return refusal(http.StatusBadRequest, reason.DelegationMalformed, "%s", peerText(err.Error())), nil
		}
		dst, err := c.reg.activeNode(ctx, svc)
		if errors.Is(err, errNotFound) || err == nil && dst.Kind != identity.KindTool {
			return refusal(http.StatusForbidden, reason.DelegationExceedsGrantor, "%q names no tool this coordinator knows: no active tool node %q", peerText(e), svc), nil
		}
		if err != nil {
			return nil, err
		}
		names, err := c.reg.currentTools(ctx, string(svc))
		if err != nil {
			return nil, err
		}
		matched := 0
		for _, rt := range names {
			t := rt.name
			if !policy.GlobMatch(glob, t) {
				continue
			}
			matched++
			if !pol.MayCallTool(me, dst.PolicyNode(), t).Allow {
				return refusal(http.StatusForbidden, reason.DelegationExceedsGrantor, "user:%s may not call %s/%s under the active policy", person, svc, t), nil
			}
			if subAgent && !pol.MayCallTool(grantor, dst.PolicyNode(), t).Allow {
				return refusal(http.StatusForbidden, reason.DelegationExceedsGrantor, "%s:%s may not call %s/%s under the active policy", grantor.Kind, grantor.Name, svc, t), nil
			}
		}
		if matched == 0 {
			return refusal(http.StatusForbidden, reason.DelegationExceedsGrantor, "%q names no tool this coordinator knows (%s's gateway has reported no such tool)", peerText(e), svc), nil
		}
	}
	return nil, nil
}

// handleDelegationList lists the delegations valid now or expired within
// delegationKeep, newest first: a person's own, a node's (issued to it or
// by it), or all for an admin.
func (c *Coordinator) handleDelegationList(w http.ResponseWriter, r *http.Request, p principal) {
	since := c.now().Add(-delegationKeep).UnixNano()
	var rows []delegRow
	var err error
	switch {
	case p.admin:
		rows, err = queryDelegs(r.Context(), c.reg.db, `WHERE expires_at > $1 ORDER BY issued_at DESC, id LIMIT 10000`, since)
	case p.person.User != "":
		rows, err = queryDelegs(r.Context(), c.reg.db, `WHERE expires_at > $1 AND person = $2 ORDER BY issued_at DESC, id LIMIT 10000`, since, string(p.person.User))
	default:
		rows, err = queryDelegs(r.Context(), c.reg.db, `WHERE expires_at > $1 AND ((agent = $2 AND incarnation = $3) OR grantor = $4) ORDER BY issued_at DESC, id LIMIT 10000`,
			since, string(p.who.id.Name), p.who.node.Incarnation, p.who.id.String())
	}
	if err != nil {
		c.internalError(w, r, "delegations: list", err)
		return
	}
	out := make([]controlapi.Delegation, 0, len(rows))
	for i := range rows {
		out = append(out, rows[i].api())
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDelegationRevoke revokes a delegation and those made from it: its
// person or an admin may.
func (c *Coordinator) handleDelegationRevoke(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	deny := func(status int, code reason.Code, msg string) {
		ev := c.event(audit.KindAdmin, p.who.actor(), "coordinator")
		ev.Action, ev.Target, ev.SrcAddr = "delegation.revoke", peerText(id), r.RemoteAddr
		ev.Decision, ev.Reason, ev.Outcome, ev.Detail = audit.Deny, code, audit.OutcomeRefused, msg
		c.record(r.Context(), ev)
		writeError(w, status, code, msg)
	}
	d, err := c.reg.delegationByID(r.Context(), id)
	if errors.Is(err, errNotFound) {
		deny(http.StatusNotFound, reason.NotFound, "no delegation "+peerText(id))
		return
	}
	if err != nil {
		c.internalError(w, r, "delegations: revoke", err)
		return
	}
	if !p.admin && string(p.person.User) != d.person {
		deny(http.StatusForbidden, reason.NotAdmin, "only the person who granted it (user:"+d.person+") or an admin may revoke delegation "+id)
		return
	}
	revoked, err := c.reg.revokeDelegation(r.Context(), id, p.who.actor(), c.now())
	if err != nil {
		c.internalError(w, r, "delegations: revoke", err)
		return
	}
	c.adminEvent(r, p.who, "delegation.revoke", id, fmt.Sprintf("user:%s, agent:%s; revoked %d: %s", d.person, d.agent, len(revoked), strings.Join(revoked, ",")))
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "delegations: publish", err)
		return
	}
	if revoked == nil {
		revoked = []string{}
	}
	writeJSON(w, http.StatusOK, controlapi.RevokeResult{Revoked: revoked})
}

func (c *Coordinator) userOf(w http.ResponseWriter, r *http.Request) (identity.User, bool) {
	u, err := identity.ParseUser(r.PathValue("email"))
	if err != nil {
		writeError(w, http.StatusBadRequest, reason.BadRequest, "want a person's e-mail address: "+peerText(err.Error()))
		return "", false
	}
	return u, true
}

// handleUserRevoke revokes a person (admin).
func (c *Coordinator) handleUserRevoke(w http.ResponseWriter, r *http.Request, who caller) {
	u, ok := c.userOf(w, r)
	if !ok {
		return
	}
	res, err := c.reg.revokeUser(r.Context(), string(u), who.actor(), c.now())
	if err != nil {
		c.internalError(w, r, "users: revoke", err)
		return
	}
	c.adminEvent(r, who, "user.revoke", u.Selector(), fmt.Sprintf("logins ended %d; delegations revoked %d: %s", res.Logins, len(res.Revoked), strings.Join(res.Revoked, ",")))
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "users: publish", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// handleUserRestore lifts a person's revocation (admin).
func (c *Coordinator) handleUserRestore(w http.ResponseWriter, r *http.Request, who caller) {
	u, ok := c.userOf(w, r)
	if !ok {
		return
	}
	if err := c.reg.restoreUser(r.Context(), string(u), c.now()); errors.Is(err, errNotFound) {
		writeError(w, http.StatusNotFound, reason.NotFound, u.Selector()+" is not revoked")
		return
	} else if err != nil {
		c.internalError(w, r, "users: restore", err)
		return
	}
	c.adminEvent(r, who, "user.restore", u.Selector(), "")
	if err := c.publish(r.Context()); err != nil {
		c.internalError(w, r, "users: publish", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// revokedPerson says whether person is revoked: their login or
// --sso join is then refused (sso.go).
func (c *Coordinator) revokedPerson(ctx context.Context, person identity.User) (bool, error) {
	return c.reg.userRevoked(ctx, string(person))
}
