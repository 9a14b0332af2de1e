package auditstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
)

// Filter selects events for Query. Its zero value selects every event,
// newest first.
type Filter struct {
	// Src and Dst match an identity: a selector "agent:NAME", "tool:NAME",
	// "model:NAME" or "admin:NAME" matches the SPIFFE ID of that kind and
	// name in any trust domain; a full SPIFFE ID (or any other identity
	// string) matches exactly; "" and "*" match everything. Tag and group
	// selectors are rejected with ErrBadFilter: events do not record tags.
	Src, Dst string
	// Decision is Allow, Deny or "" for both.
	Decision audit.Decision
	// Kind, Method and Tool match exactly when not empty.
	Kind   audit.Kind
	Method string
	Tool   string
	// Since (inclusive) and Until (exclusive) bound the event time; the
	// zero time does not bound.
	Since, Until time.Time
	// AfterSeq selects events with a larger seq, for following the trail.
	AfterSeq int64
	// Limit is the most events returned; 0 means no limit.
	Limit int
	// Ascending returns the oldest events first; the default is newest
	// first.
	Ascending bool
}

// Query calls fn for each event matching f, with Seq set, streaming from
// the database without holding the result in memory. An error from fn
// stops the query and is returned. Exports are a Query with Ascending set.
func (s *Store) Query(ctx context.Context, f Filter, fn func(audit.Event) error) error {
	q, args, err := f.sql()
	if err != nil {
		return fmt.Errorf("audit: query: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("audit: query: %w", err)
	}
	defer rows.Close()
	var body []byte
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq, &body); err != nil {
			return fmt.Errorf("audit: query: %w", err)
		}
		var e audit.Event
		if err := json.Unmarshal(body, &e); err != nil {
			return fmt.Errorf("audit: query: event at seq %d: %w: %w", seq, ErrCorrupt, err)
		}
		e.Seq = seq
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: query: %w", err)
	}
	return nil
}

// sql builds the query for f.
func (f Filter) sql() (string, []any, error) {
	var where []string
	var args []any
	// add appends a condition written with ? for each argument, numbering
	// them $1, $2... in the order of the query.
	add := func(cond string, a ...any) {
		for range a {
			args = append(args, nil)
			cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		copy(args[len(args)-len(a):], a)
		where = append(where, cond)
	}
	for _, id := range []struct{ v, col, sel string }{{f.Src, "src", "src_sel"}, {f.Dst, "dst", "dst_sel"}} {
		v := id.v
		switch {
		case v == "" || v == "*":
		case strings.HasPrefix(v, "spiffe://"):
			if sel := selectorOf(v); sel != "" {
				add(id.sel+" = ? AND "+id.col+" = ?", sel, v)
			} else {
				add(id.col+" = ?", v)
			}
		case strings.HasPrefix(v, "tag:") || strings.HasPrefix(v, "group:"):
			return "", nil, fmt.Errorf("%w: %s %q: events record identities, not tags or groups", ErrBadFilter, id.col, v)
		default:
			kind, name, ok := strings.Cut(v, ":")
			if ok && nodeKinds[kind] {
				if name == "" || strings.Contains(name, "/") {
					return "", nil, fmt.Errorf("%w: %s %q: bad name", ErrBadFilter, id.col, v)
				}
				add(id.sel+" = ?", v)
			} else {
				add(id.col+" = ?", v)
			}
		}
	}
	switch f.Decision {
	case "":
	case audit.Allow, audit.Deny:
		add("decision = ?", f.Decision)
	default:
		return "", nil, fmt.Errorf("%w: decision %q", ErrBadFilter, f.Decision)
	}
	if f.Kind != "" {
		add("kind = ?", string(f.Kind))
	}
	if f.Method != "" {
		add("method = ?", f.Method)
	}
	if f.Tool != "" {
		add("tool = ?", f.Tool)
	}
	if !f.Since.IsZero() {
		add("time_ns >= ?", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		add("time_ns < ?", f.Until.UnixNano())
	}
	if f.AfterSeq > 0 {
		add("seq > ?", f.AfterSeq)
	}
	if f.Limit < 0 {
		return "", nil, fmt.Errorf("%w: negative limit", ErrBadFilter)
	}
	var b strings.Builder
	b.WriteString("SELECT seq, body FROM audit_events")
	if len(where) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(where, " AND "))
	}
	if f.Ascending {
		b.WriteString(" ORDER BY seq ASC")
	} else {
		b.WriteString(" ORDER BY seq DESC")
	}
	if f.Limit > 0 {
		b.WriteString(" LIMIT " + strconv.Itoa(f.Limit))
	}
	return b.String(), args, nil
}

// nodeKinds are the SPIFFE path kinds a selector may name.
var nodeKinds = map[string]bool{"agent": true, "tool": true, "model": true, "admin": true}

// selectorOf returns the selector form "kind:name" of a SPIFFE ID
// spiffe://trust-domain/kind/name, or "" for anything else. It is stored
// beside src and dst so selector filters use an index.
func selectorOf(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || td == "" {
		return ""
	}
	kind, name, ok := strings.Cut(path, "/")
	if !ok || !nodeKinds[kind] || name == "" || strings.Contains(name, "/") {
		return ""
	}
	return kind + ":" + name
}
