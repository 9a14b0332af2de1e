package gateway

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// listKind is one of the four filtered lists, as a bit so that pending
// notifications can be merged.
type listKind uint8

const (
	listTools listKind = 1 << iota
	listPrompts
	listResources
	listTemplates
	// listTasks filters tasks/list to the caller's own tasks; it has no
	// list_changed notification and is not part of listAll.
	listTasks
	listAll = listTools | listPrompts | listResources | listTemplates
)

// notification returns the list_changed method for k. Resources and resource
// templates share one notification.
func (k listKind) notification() string {
	switch k {
	case listTools:
		return "notifications/tools/list_changed"
	case listPrompts:
		return "notifications/prompts/list_changed"
	default:
		return "notifications/resources/list_changed"
	}
}

// field is the result field that FilterList filters for k.
func (k listKind) field() string {
	switch k {
	case listTools:
		return "tools"
	case listPrompts:
		return "prompts"
	case listResources:
		return "resources"
	case listTasks:
		return "tasks"
	default:
		return "resourceTemplates"
	}
}

// session is one client session: an Mcp-Session-Id bound to the identity
// that created it, or (id == "") the stateless requests of one identity.
// It remembers what each list showed, to tell when an Update changes it.
type session struct {
	id          string
	owner       identity.ID
	incarnation string
	// user is the person behind the owner (audit.Event.User), fixed for a
	// registration: its session events name them.
	user string
	// key is the owning Identifier caller's Key ("" for a certificate
	// owner); hasCaller says caller (guarded by mu) is set.
	key       string
	hasCaller bool
	// delegation and del are the delegation the session was opened with
	// (delegation.go): every request on it must present the same one.
	delegation string
	del        *delegated
	// elicit says the client declared form-mode elicitation in the
	// initialize that created the session (holdelicit.go).
	elicit bool

	ctx    context.Context // cancelled by cut, with a *cutError cause when ended for a reason
	cancel context.CancelCauseFunc
	// expiryEvent is the id of the audit event that records the end of
	// the session when its delegation expires: its streams end at the
	// expiry, with this id, before the sweep that records it.
	expiryEvent string

	mu     sync.Mutex
	caller *admission.Caller            // the Identifier caller as last checked
	views  map[listKind]map[string]bool // name -> shown
	// tools maps each tool name to the hash of the definition this
	// session last listed (pins.go).
	tools map[string]string
	// pages follows the session's paginated tool lists (toolpages.go).
	pages   pageChains
	pending listKind // to deliver when a stream opens
	streams map[*stream]struct{}
	// inject, if set, delivers list_changed itself (stdio sessions).
	inject func(listKind)
	// up is what the upstream keeps for the session (the stdio bridge).
	up any
	// watched holds the requests whose answer may be a task handle, by
	// IDKey, so that a replay on the GET stream binds the task too.
	watched map[string]*taskOrigin
	// busy counts the session's requests in flight (an open GET stream is
	// one); lastUsed is when the last of them ended. A session that is not
	// busy and was last used longer ago than the idle timeout is reaped.
	busy     int
	lastUsed time.Time
	// reqs are the requests in flight on the session (cut.go).
	reqs map[*connRequest]struct{}
	// slot is the session's place among its owner's sessions, released
	// when the session is cut.
	slot *budget.Lease
}

func newSession(base context.Context, id string, p peerRef, now time.Time) *session {
	ctx, cancel := context.WithCancelCause(base)
	expiry := ""
	if p.del != nil {
		// The session's streams end when its delegation expires, by the
		// gateway's clock (now); the next sweep ends the session itself,
		// and records it under expiry.
		expiry = audit.NewID()
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, time.Now().Add(p.del.lapse().Sub(now)),
			&cutError{why: reason.DelegationExpired, eventID: expiry})
		cancelCause := cancel
		cancel = func(err error) { cancelCause(err); stop() }
	}
	return &session{
		id: id, owner: p.id, incarnation: p.incarnation, user: p.user,
		key: p.key, hasCaller: p.caller != nil, caller: p.caller,
		delegation: p.delegation, del: p.del,
		ctx: ctx, cancel: cancel, expiryEvent: expiry, lastUsed: now,
		views:   make(map[listKind]map[string]bool),
		streams: make(map[*stream]struct{}),
	}
}

// cut ends the session's streams and gives back its slot.
func (s *session) cut() { s.cutFor(nil) }

// cutFor is cut with a cause: a *cutError gives the session's requests in
// flight an error that says why (cut.go).
func (s *session) cutFor(cause error) {
	if cause != nil {
		s.cutRequests(cause)
	}
	s.cancel(cause)
	s.mu.Lock()
	l := s.slot
	s.slot = nil
	s.mu.Unlock()
	l.Release()
}

// hold makes l the session's slot, released when the session is cut; if
// it already was, l is released now.
func (s *session) hold(l *budget.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		l.Release()
		return
	}
	s.slot = l
}

// enter marks a request of the session in flight.
func (s *session) enter() {
	s.mu.Lock()
	s.busy++
	s.mu.Unlock()
}

// leave marks the end of a request that entered, at now.
func (s *session) leave(now time.Time) {
	s.mu.Lock()
	s.busy--
	if now.After(s.lastUsed) {
		s.lastUsed = now
	}
	s.mu.Unlock()
}

// idleSince reports whether the session has nothing in flight and has not
// been used since before cutoff.
func (s *session) idleSince(cutoff time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy == 0 && s.lastUsed.Before(cutoff)
}

// remember records what one list response offered and showed.
func (s *session) remember(k listKind, names []string, shown func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.views[k]
	if v == nil {
		v = make(map[string]bool, len(names))
		s.views[k] = v
	}
	for _, n := range names {
		v[n] = shown(n)
	}
}

// recheck re-filters what the session was shown under st and notifies the
// session's streams of every list that changed.
func (s *session) recheck(st *admission.State) {
	vis, ok := visibleFor(s, st)
	if !ok {
		return
	}
	var changed listKind
	sp := st.Policy.ToolPins(st.Self.Name)
	s.mu.Lock()
	for k, v := range s.views {
		for name, was := range v {
			now := visibleIn(vis, k, name)
			if now && k == listTools && st.Policy.HasToolPins() {
				now = sp.CheckTool(name, s.tools[name]).Allows()
			}
			if now != was {
				v[name] = now
				changed |= k
			}
		}
	}
	s.mu.Unlock()
	if changed != 0 {
		s.notify(changed)
	}
}

// notify hands list_changed bits to the session's streams, or keeps them
// until one opens.
func (s *session) notify(bits listKind) {
	s.mu.Lock()
	inject := s.inject
	if inject == nil {
		if len(s.streams) == 0 {
			s.pending |= bits
		}
		for st := range s.streams {
			st.post(bits)
		}
	}
	s.mu.Unlock()
	if inject != nil {
		inject(bits)
	}
}

// attach registers a server-to-client stream; it receives pending bits.
func (s *session) attach(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[st] = struct{}{}
	if s.pending != 0 {
		st.post(s.pending)
		s.pending = 0
	}
}

func (s *session) detach(st *stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
}

// stream is one server-to-client SSE stream the gateway may inject
// list_changed notifications into: a session's GET stream, or a 2026-07-28
// subscriptions/listen stream.
type stream struct {
	mask  listKind        // kinds this stream wants
	subID json.RawMessage // listen request id, stamped into _meta; nil for GET
	mu    sync.Mutex
	bits  listKind
	wake  chan struct{}
}

func newStream(mask listKind, subID json.RawMessage) *stream {
	return &stream{mask: mask, subID: subID, wake: make(chan struct{}, 1)}
}

func (st *stream) post(bits listKind) {
	bits &= st.mask
	if bits == 0 {
		return
	}
	st.mu.Lock()
	st.bits |= bits
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *stream) take() listKind {
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.bits
	st.bits = 0
	return b
}

// messages returns the notifications for bits, one per method.
func (st *stream) messages(bits listKind) [][]byte {
	var out [][]byte
	resources := false
	for _, k := range []listKind{listTools, listPrompts, listResources, listTemplates} {
		if bits&k == 0 {
			continue
		}
		if k == listResources || k == listTemplates {
			if resources {
				continue
			}
			resources = true
		}
		out = append(out, notificationJSON(k.notification(), st.subID))
	}
	return out
}

func notificationJSON(method string, subID json.RawMessage) []byte {
	b := []byte(`{"jsonrpc":"2.0","method":"` + method + `"`)
	if subID != nil {
		b = append(b, `,"params":{"_meta":{"io.modelcontextprotocol/subscriptionId":`...)
		b = append(b, subID...)
		b = append(b, "}}"...)
	}
	return append(b, '}')
}

// sessionTable holds the open sessions by id, and the stateless pseudo
// sessions by identity.
type sessionTable struct {
	mu        sync.Mutex
	byID      map[string]*session
	stateless map[ownerKey]*session
	metrics   *metrics.Set // counts the sessions in byID
}

func newSessionTable() *sessionTable {
	return &sessionTable{byID: make(map[string]*session), stateless: make(map[ownerKey]*session)}
}

func (t *sessionTable) get(id string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// add registers s; it fails if the id is taken.
func (t *sessionTable) add(s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byID[s.id]; ok {
		return false
	}
	t.byID[s.id] = s
	t.metrics.AddSessions(1)
	return true
}

// statelessFor returns the pseudo session of p, creating it, and marks it
// used at now.
func (t *sessionTable) statelessFor(base context.Context, p peerRef, now time.Time) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.stateless[p.owner()]
	if s == nil || s.incarnation != p.incarnation {
		if s != nil {
			s.cut()
		}
		s = newSession(base, "", p, now)
		t.stateless[p.owner()] = s
	}
	s.mu.Lock()
	if now.After(s.lastUsed) {
		s.lastUsed = now
	}
	s.mu.Unlock()
	return s
}

func (t *sessionTable) remove(s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.id == "" {
		if t.stateless[s.ref().owner()] == s {
			delete(t.stateless, s.ref().owner())
			return true
		}
		return false
	}
	if t.byID[s.id] == s {
		delete(t.byID, s.id)
		t.metrics.AddSessions(-1)
		return true
	}
	return false
}

func (t *sessionTable) all() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allLocked()
}

func (t *sessionTable) allLocked() []*session {
	out := make([]*session, 0, len(t.byID)+len(t.stateless))
	for _, s := range t.byID {
		out = append(out, s)
	}
	for _, s := range t.stateless {
		out = append(out, s)
	}
	return out
}

func (t *sessionTable) removeAll() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.allLocked()
	t.metrics.AddSessions(-len(t.byID))
	clear(t.byID)
	clear(t.stateless)
	return out
}

// ownerKey names the owner of a stateless pseudo session: a certificate
// identity, or an Identifier caller's key.
type ownerKey struct {
	id  identity.ID
	key string
	// delegation is the ID of the delegation the owner presents (a node
	// acting for different people owns different sessions).
	delegation string
}
