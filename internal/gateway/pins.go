package gateway

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// Tool pinning (the policy's tool_pins, package toolpin). Every tools/list
// result the gateway filters is read into definitions and hashed: a list
// naming one tool twice (on one page, or on two pages of one list:
// toolpages.go), or holding a definition too large to hash, is refused
// whole and audited. A tool whose definition does not match its
// pin (or that has no pin under "enforce") is removed from the list, and
// a tools/call of it is refused with tool_changed. A call is checked
// against the definition this session last listed; a session that has not
// listed the tool is checked against the one the gateway last saw from any
// session, and when the gateway has seen none, a pinned tool (or any tool
// under "enforce") is refused: the client lists tools and calls again.
//
// A definition that does not match its pin is audited once per gateway,
// tool and new hash (a request event: method tools/list, decision deny,
// reason tool_changed, its Detail a pinDrift), with a diff against the
// pinned definition when the gateway has seen it. When a definition
// changes, every other session that listed the tool gets
// notifications/tools/list_changed, and its next list shows the new state.

// Bounds on what pinning keeps: definitions the gateway remembers (latest
// per tool, plus the ones seen under a pinned hash, for diffs), and
// audited drifts.
const (
	maxPinTools   = 10_000
	maxPinAudited = 10_000
	// maxPinDefBytes bounds the canonical definitions kept in memory.
	maxPinDefBytes = 16 << 20
)

// pinDrift is the Detail of a tool_changed audit event.
type pinDrift struct {
	Tool string `json:"tool"`
	// Pinned is the pinned hash ("" when the tool has no pin).
	Pinned string `json:"pinned"`
	// Seen is the hash of the definition the server now sends.
	Seen string `json:"seen"`
	// Diff is toolpin.Diff from the pinned definition (when the gateway
	// has seen it) to the one sent.
	Diff string `json:"diff,omitempty"`
}

// toolDefs is what the gateway knows of its upstream's tool definitions.
type toolDefs struct {
	mu sync.Mutex
	// last is the definition last listed, per tool.
	last map[string]toolpin.Definition
	// byHash keeps definitions by hash, for diffs against a pin; bytes
	// counts their canonical sizes.
	byHash map[string]toolpin.Definition
	bytes  int
	// audited holds tool+"\x00"+hash of the drifts already audited.
	audited map[string]bool
	// warned holds the same for unpinned tools logged under "warn".
	warned map[string]bool
}

func newToolDefs() *toolDefs {
	return &toolDefs{last: map[string]toolpin.Definition{}, byHash: map[string]toolpin.Definition{},
		audited: map[string]bool{}, warned: map[string]bool{}}
}

// Snapshot returns the latest definition of each tool the gateway has seen
// listed, sorted by name.
func (t *toolDefs) snapshot() []toolpin.Definition {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]toolpin.Definition, 0, len(t.last))
	for _, k := range slices.Sorted(maps.Keys(t.last)) {
		out = append(out, t.last[k])
	}
	return out
}

// Tools returns the latest definition of each tool the gateway has seen
// listed by its upstream, sorted by name.
func (g *Gateway) Tools() []toolpin.Definition { return g.tools.snapshot() }

// observeTools reads the tools of an unfiltered tools/list result for
// sess under the current state, audits what must be, and returns the
// names to hide. An error refuses the whole list.
func (g *Gateway) observeTools(result []byte, page listPage, sess *session) (map[string]bool, error) {
	st := g.state.Load()
	defs, err := toolpin.ParseList(result)
	if err == nil && sess != nil {
		err = sess.checkPage(page, defs, nextCursor(result))
	}
	if err != nil {
		ev := &audit.Event{Kind: audit.KindRequest, Dst: st.Dst(), Method: "tools/list", Decision: audit.Deny,
			Reason: reason.Malformed, Outcome: audit.OutcomeUpstreamError, Detail: "tool list refused: " + err.Error()}
		if sess != nil {
			ev.Session = sess.id
		}
		g.record(context.Background(), ev)
		return nil, err
	}
	sp := st.Policy.ToolPins(st.Self.Name)
	hide := map[string]bool{}
	var changed, drifted []toolpin.Definition
	t := g.tools
	t.mu.Lock()
	for _, d := range defs {
		if prev, ok := t.last[d.Name]; !ok || prev.Hash != d.Hash {
			if ok || len(t.last) < maxPinTools {
				t.last[d.Name] = d
				changed = append(changed, d)
			}
		}
		if _, ok := t.byHash[d.Hash]; !ok && len(t.byHash) < maxPinTools && t.bytes+len(d.Canonical) <= maxPinDefBytes {
			t.byHash[d.Hash] = d
			t.bytes += len(d.Canonical)
		}
		status := sp.CheckTool(d.Name, d.Hash)
		if !status.Allows() {
			hide[d.Name] = true
			key := d.Name + "\x00" + d.Hash
			if !t.audited[key] && len(t.audited) < maxPinAudited {
				t.audited[key] = true
				drifted = append(drifted, d)
			}
		} else if status == policy.Unpinned {
			key := d.Name + "\x00" + d.Hash
			if !t.warned[key] && len(t.warned) < maxPinAudited {
				t.warned[key] = true
				g.log.Warn("tool has no pin (pin mode warn): review it with agentmesh tools diff and pin it", "tool", d.Name, "hash", d.Hash)
			}
		}
	}
	pinnedDefs := make(map[string]toolpin.Definition, len(drifted))
	for _, d := range drifted {
		if h := sp.Tools[d.Name]; h != "" {
			if old, ok := t.byHash[h]; ok {
				pinnedDefs[d.Name] = old
			}
		}
	}
	t.mu.Unlock()

	if sess != nil {
		sess.listedTools(defs)
	}
	for _, d := range drifted {
		pinned := sp.Tools[d.Name]
		old, ok := pinnedDefs[d.Name]
		if !ok {
			old = toolpin.Definition{Name: d.Name, Hash: pinned}
		}
		detail, _ := json.Marshal(pinDrift{Tool: d.Name, Pinned: pinned, Seen: d.Hash, Diff: toolpin.Diff(old, d)})
		ev := &audit.Event{Kind: audit.KindRequest, Dst: st.Dst(), Method: "tools/list", Tool: d.Name, Decision: audit.Deny,
			Reason: reason.ToolChanged, PolicyVersion: st.PolicyVersion(), Detail: string(detail)}
		if sess != nil {
			ev.Session = sess.id
		}
		g.record(context.Background(), ev)
		g.log.Warn("tool definition does not match its pin: hidden and refused", "tool", d.Name, "pinned", pinned, "seen", d.Hash, "event_id", ev.ID)
	}
	if len(changed) > 0 {
		g.toolsChanged(changed, sess)
	}
	return hide, nil
}

// toolsChanged tells every other session that listed one of the changed
// tools under another definition to list again, and reports the new
// state.
func (g *Gateway) toolsChanged(changed []toolpin.Definition, from *session) {
	var stale []*session
	for _, s := range g.sessions.all() {
		if s != from && s.listedOther(changed) {
			stale = append(stale, s)
		}
	}
	if len(stale) > 0 {
		// Not on this response's path: a stdio session's notification is
		// a write to its client's transport.
		g.goOwned(func() {
			for _, s := range stale {
				s.notify(listTools)
			}
		})
	}
	if g.cfg.OnTools != nil {
		g.cfg.OnTools(g.tools.snapshot())
	}
}

// listedTools records the definitions a tools/list showed the session.
func (s *session) listedTools(defs []toolpin.Definition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tools == nil {
		s.tools = make(map[string]string, len(defs))
	}
	for _, d := range defs {
		if _, ok := s.tools[d.Name]; ok || len(s.tools) < maxPinTools {
			s.tools[d.Name] = d.Hash
		}
	}
}

// listedOther reports whether the session last listed one of defs under
// another hash.
func (s *session) listedOther(defs []toolpin.Definition) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range defs {
		if h, ok := s.tools[d.Name]; ok && h != d.Hash {
			return true
		}
	}
	return false
}

// toolHash is the hash of tool's definition as the session last listed it,
// or else as the gateway last saw it, or "" when neither has.
func (g *Gateway) toolHash(sess *session, tool string) string {
	if sess != nil {
		sess.mu.Lock()
		h, ok := sess.tools[tool]
		sess.mu.Unlock()
		if ok {
			return h
		}
	}
	g.tools.mu.Lock()
	defer g.tools.mu.Unlock()
	return g.tools.last[tool].Hash
}

// checkPin refuses an allowed tools/call (v) whose tool does not match
// its pin.
func (g *Gateway) checkPin(x *exchange, m *mcpwire.Message, v verdict) verdict {
	return g.checkPinUnder(x.peer, x, m, v)
}

// checkPinUnder is checkPin under the state peer holds (a held call,
// decided again when it is approved, is checked against the pins in force
// then).
func (g *Gateway) checkPinUnder(peer *peerInfo, x *exchange, m *mcpwire.Message, v verdict) verdict {
	if !v.allow || m.Kind != mcpwire.KindRequest || m.Method != "tools/call" {
		return v
	}
	st := peer.state
	sp := st.Policy.ToolPins(st.Self.Name)
	if sp.Mode == policy.PinWarn && len(sp.Tools) == 0 {
		return v // nothing pinned and nothing enforced
	}
	if sp.CheckTool(v.tool, g.toolHash(x.sess, v.tool)).Allows() {
		return v
	}
	v.origin = nil
	return v.denied(CodeDenied, reason.ToolChanged)
}
