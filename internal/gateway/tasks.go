package gateway

import (
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// Tasks (MCP 2025-11-25, and the 2026-07-28 io.modelcontextprotocol/tasks
// extension) let a tools/call answer with a task handle; the tool's result
// is fetched later with tasks/get or tasks/result, input is given with
// tasks/update, and tasks/cancel and tasks/list manage them. The MCP
// specification requires the receiver to bind tasks to the requestor's
// authorization context; the upstream sees only the gateway (client
// credentials never pass), so the gateway is that binding:
//
//   - when a decided request (a tools/call) is answered with a task handle
//     (mcpwire's CreatedTaskID), the task is recorded as owned by the
//     identity that made the request, with the request as the policy saw
//     it;
//   - a tasks/get, tasks/result, tasks/cancel or tasks/update for a task id
//     the caller does not own (unknown, expired from the table, or another
//     identity's) is refused with unknown_task and never forwarded, the
//     same answer in every case so that ids cannot be probed;
//   - one the caller owns is decided again, under the current policy, as
//     the request that created the task (same tool, same arguments): a
//     grant withdrawn since then stops the result and any further input;
//   - a tasks/list result is filtered to the caller's own tasks.
//
// The table is bounded: each owner keeps at most maxTasksPerOwner tasks,
// holding at most maxTaskBytesPerOwner of request params between them
// (the arguments are kept to decide again), each for at most maxTaskAge;
// beyond that the oldest are forgotten, and a forgotten task can no longer
// be reached through the gateway (fail closed).
const (
	maxTasksPerOwner     = 1024
	maxTaskBytesPerOwner = 32 << 20
	maxTaskAge           = 24 * time.Hour
	// maxTaskHandleBytes bounds the JSON answer the gateway holds back
	// to look for a task handle (a few hundred bytes); a longer answer is
	// a result, relayed as it streams.
	maxTaskHandleBytes = 64 << 10
)

// taskOrigin is the decided request a task carries on.
type taskOrigin struct {
	req                    policy.Request // Src and Dst are filled in per request
	tool, resource, prompt string
	// size is the length of the request's params, what keeping req costs.
	size int
}

type taskEntry struct {
	id          string
	owner       ownerKey
	incarnation string
	origin      taskOrigin
	created     time.Time
}

// taskTable maps task ids to their owner and origin.
type taskTable struct {
	mu      sync.Mutex
	byID    map[string]*taskEntry
	byOwner map[ownerKey][]*taskEntry // oldest first
	bytes   map[ownerKey]int          // the sizes of byOwner's origins
}

func newTaskTable() *taskTable {
	return &taskTable{byID: make(map[string]*taskEntry), byOwner: make(map[ownerKey][]*taskEntry), bytes: make(map[ownerKey]int)}
}

// add records task id as created by p for origin at now. It reports false
// when the id is already bound to another owner (never shared); the same
// handle seen again (a replayed answer) changes nothing.
func (t *taskTable) add(id string, p peerRef, origin taskOrigin, now time.Time) bool {
	owner := p.owner()
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.byID[id]; e != nil {
		return e.owner == owner && e.incarnation == p.incarnation
	}
	q := t.expire(owner, now)
	for len(q) > 0 && (len(q) >= maxTasksPerOwner || t.bytes[owner]+origin.size > maxTaskBytesPerOwner) {
		t.drop(q[0])
		q = q[1:]
	}
	e := &taskEntry{id: id, owner: owner, incarnation: p.incarnation, origin: origin, created: now}
	t.byID[id] = e
	t.byOwner[owner] = append(q, e)
	t.bytes[owner] += origin.size
	return true
}

// expire drops owner's tasks older than maxTaskAge and returns the rest.
// t.mu is held.
func (t *taskTable) expire(owner ownerKey, now time.Time) []*taskEntry {
	q := t.byOwner[owner]
	n := 0
	for n < len(q) && now.Sub(q[n].created) > maxTaskAge {
		t.drop(q[n])
		n++
	}
	q = q[n:]
	if len(q) == 0 {
		delete(t.byOwner, owner)
		delete(t.bytes, owner)
	}
	return q
}

// drop forgets e, which the caller takes off its owner's queue. t.mu is
// held.
func (t *taskTable) drop(e *taskEntry) {
	if t.byID[e.id] == e {
		delete(t.byID, e.id)
	}
	t.bytes[e.owner] -= e.origin.size
}

// lookup returns the origin of task id when p owns it and it has not
// expired at now.
func (t *taskTable) lookup(id string, p peerRef, now time.Time) (taskOrigin, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byID[id]
	if e == nil || e.owner != (p.owner()) || e.incarnation != p.incarnation || now.Sub(e.created) > maxTaskAge {
		return taskOrigin{}, false
	}
	return e.origin, true
}

// originOf returns what the task table records for a decided request whose
// answer may be a task handle: its policy request and audit names.
func originOf(req policy.Request, v verdict, size int) taskOrigin {
	req.Src, req.Dst = policy.Node{}, policy.Node{}
	return taskOrigin{req: req, tool: v.tool, resource: v.resource, prompt: v.prompt, size: size}
}

// noteTask records the task handle data may carry, an upstream message
// answering the request that x forwarded.
func (g *Gateway) noteTask(x *exchange, data []byte) {
	if x.v.origin == nil {
		return
	}
	msgs, batch, err := mcpwire.Decode(data, mcpwire.Limits{MaxBytes: max(len(data), 1), MaxDepth: g.cfg.Limits.MaxDepth})
	if err != nil || batch || len(msgs) != 1 || msgs[0].IDKey() != x.msg.IDKey() {
		return
	}
	g.noteTaskOf(&msgs[0], x.peer.ref, *x.v.origin)
	if x.sess != nil {
		x.sess.takeWatched(x.msg.IDKey()) // answered here, no replay to wait for
	}
}

// noteTaskOf records the task handle that m, the answer to a request of p
// with the given origin, carries.
func (g *Gateway) noteTaskOf(m *mcpwire.Message, p peerRef, origin taskOrigin) {
	id, ok := m.CreatedTaskID()
	if !ok {
		return
	}
	if !g.tasks.add(id, p, origin, g.now()) {
		g.log.Error("upstream reused a task id of another identity", "task", id)
	}
}

// maxWatched bounds a session's watched requests.
const maxWatched = 256

// watchTask remembers that the request with IDKey id may be answered with
// a task handle of origin o.
func (s *session) watchTask(id string, o *taskOrigin) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watched == nil {
		s.watched = make(map[string]*taskOrigin)
	}
	if len(s.watched) >= maxWatched {
		for k := range s.watched {
			delete(s.watched, k)
			break
		}
	}
	s.watched[id] = o
}

// takeWatched returns the origin watchTask recorded for IDKey id, or nil,
// and forgets it: the answer has arrived.
func (s *session) takeWatched(id string) *taskOrigin {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.watched[id]
	delete(s.watched, id)
	return o
}

// ref is the peer that owns s, as the task table names owners.
func (s *session) ref() peerRef {
	return peerRef{id: s.owner, incarnation: s.incarnation, key: s.key, delegation: s.delegation, del: s.del}
}
