package gateway

import (
	"encoding/json"
	"fmt"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// Paginated tool lists. A tool list may come in pages: the client sends
// tools/list again with the nextCursor of the page before. A name on two
// pages of one list is as ambiguous as a name twice on one page (which
// definition would a call reach?), so it is refused the same way: the
// page that repeats it is refused whole and audited (pins.go). The gateway
// follows each list by its cursors: a page's tool names are kept under the
// nextCursor it gives, and the page a request with that cursor gets is
// checked against them. A session keeps at most maxPageChains lists in
// progress and maxPinTools names across them; a list whose names were
// dropped (or whose cursor the gateway never saw) is not checked.

const maxPageChains = 8

// listPage says which page of a list a list request asks for.
type listPage struct {
	// cursor is params.cursor; "" for the first page.
	cursor string
	// known is false for an answer whose request the gateway cannot tell
	// (a response replayed on a resumed stream): it is not followed.
	known bool
}

// pageOf reads the page a list request m asks for. A cursor it cannot
// read is followed as unknown.
func pageOf(m *mcpwire.Message) listPage {
	c, err := m.ListCursor()
	return listPage{cursor: c, known: err == nil}
}

// pageChains are the tool lists in progress of one session, by the cursor
// of their next page, in the order they were kept.
type pageChains struct {
	byCursor map[string]map[string]bool
	order    []string
	names    int
}

// checkPage checks the tools of one page (defs) against the earlier pages
// of its list and keeps them for the next page, the one nextCursor names.
// It returns an error naming a tool an earlier page listed.
func (s *session) checkPage(p listPage, defs []toolpin.Definition, nextCursor string) error {
	if !p.known {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &s.pages
	var seen map[string]bool
	if p.cursor != "" {
		seen = c.take(p.cursor)
		for _, d := range defs {
			if seen[d.Name] {
				return fmt.Errorf("tool %q is on two pages of one list", d.Name)
			}
		}
	}
	if nextCursor == "" || c.names+len(seen)+len(defs) > maxPinTools {
		return nil
	}
	if seen == nil {
		seen = make(map[string]bool, len(defs))
	}
	for _, d := range defs {
		seen[d.Name] = true
	}
	c.keep(nextCursor, seen)
	return nil
}

// take removes and returns the names kept for cursor.
func (c *pageChains) take(cursor string) map[string]bool {
	seen, ok := c.byCursor[cursor]
	if !ok {
		return nil
	}
	delete(c.byCursor, cursor)
	c.names -= len(seen)
	for i, k := range c.order {
		if k == cursor {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
	return seen
}

// keep keeps seen for cursor, dropping the oldest list past the bound.
func (c *pageChains) keep(cursor string, seen map[string]bool) {
	c.take(cursor)
	if len(c.order) == maxPageChains {
		c.take(c.order[0])
	}
	if c.byCursor == nil {
		c.byCursor = map[string]map[string]bool{}
	}
	c.byCursor[cursor] = seen
	c.order = append(c.order, cursor)
	c.names += len(seen)
}

// nextCursor reads result.nextCursor of a list result ("" when absent).
func nextCursor(result []byte) string {
	var r struct {
		NextCursor string `json:"nextCursor"`
	}
	if json.Unmarshal(result, &r) != nil {
		return ""
	}
	return r.NextCursor
}
