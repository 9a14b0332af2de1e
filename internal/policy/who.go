package policy

import (
	"cmp"
	"slices"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// Who-can: what the grants of a policy give, read from the other end. Who
// answers which identities may reach one destination, Can what one source
// may use; both list one Right per grant and identity, naming the grant
// (its index and line) that gives it.
//
// A Right is what a grant gives, not a decision: the grants a request
// reaches are checked lowest index first and the lowest one that allows
// decides (Decide), so a tool may appear in several rights, each with its
// own when and approval. A right whose grant has a when is Conditional:
// each call is decided with its arguments when it is made. Tool pins are
// not considered (a pinned tool whose definition changed is refused
// whatever the grants say), and neither are resource, prompt and model
// names: only their patterns are known.

// Right is what one grant gives one identity at one destination.
type Right struct {
	// Src and Dst are the two ends, as selectors ("agent:NAME"): a
	// registered node, or, when no node was given for that side, the
	// selector the grant names there ("tag:ci", "*").
	Src string `json:"src"`
	Dst string `json:"dst"`
	// Tags are the registered tags of the end that was looked up (the
	// sources for Who, the destinations for Can).
	Tags []string `json:"tags,omitempty"`
	// User is the person who owns that end (Node.User: a registered
	// node's owner), matched by user:LOGIN selectors; "" for none.
	User string `json:"user,omitempty"`
	// Via is the entry of the grant's src (for Who) or dst (for Can) that
	// matches that end, as written: "agent:NAME", "tag:ci", "*" or
	// "group:NAME" (then Member says which of its members matched).
	Via    string `json:"via"`
	Member string `json:"member,omitempty"`
	// Grant is the grant's index in the document, Line its line.
	Grant int `json:"grant"`
	Line  int `json:"line"`
	// Connect says the grant gives only a connection: it lists no tools,
	// resources, prompts, models or paths.
	Connect bool `json:"connect,omitempty"`
	// Tools are the tools the grant gives: with ToolsSeen, the tools the
	// destination's gateway reported that the grant's list covers;
	// otherwise the list's patterns as written ("!x" excludes x).
	Tools     []string `json:"tools,omitempty"`
	ToolsSeen bool     `json:"tools_seen,omitempty"`
	// Resources, Prompts, Models and Paths are the grant's patterns.
	Resources []string `json:"resources,omitempty"`
	Prompts   []string `json:"prompts,omitempty"`
	Models    []string `json:"models,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	// Conditional says the grant has a when, When is its expression.
	Conditional bool   `json:"conditional,omitempty"`
	When        string `json:"when,omitempty"`
	// Approval is the group that must approve each call, ApprovalTimeout
	// how long a call waits for it.
	Approval        string `json:"approval,omitempty"`
	ApprovalTimeout string `json:"approval_timeout,omitempty"`
	// OnBehalfOf, when set, is the grant's on_behalf_of as written: the
	// right holds only for requests made with a delegation from one of
	// those people ("*": any delegation).
	OnBehalfOf []string `json:"on_behalf_of,omitempty"`
}

// WhoQuery asks Who or Can.
type WhoQuery struct {
	// Nodes are the registered nodes, the identities a right can name on
	// the side asked about. With none, rights name that side by the
	// grant's selectors.
	Nodes []Node
	// Tools maps a tool server's name (without "tool:") to the tools its
	// gateway reported; a server without an entry shows patterns.
	Tools map[string][]string
	// Tool, when set, keeps only the grants whose tools list covers the
	// tool of that name, and shows only it.
	Tool string
}

// Who returns the rights that reach dst: one per grant and registered node
// (or, with no nodes, per grant and src selector), ordered by source then
// grant. dst's tags should be its registered ones.
func (p *Policy) Who(dst Node, q WhoQuery) []Right {
	return p.rights(dst, q, true)
}

// Can returns what src may use: one right per grant and registered
// destination (or, with no nodes, per grant and dst selector), ordered by
// destination then grant.
func (p *Policy) Can(src Node, q WhoQuery) []Right {
	return p.rights(src, q, false)
}

// grantSides returns, for each grant, its expanded src and dst keys,
// sorted, read back from the index.
func (p *Policy) grantSides() (src, dst [][]nodeKey) {
	src, dst = make([][]nodeKey, len(p.grants)), make([][]nodeKey, len(p.grants))
	for dk, bySrc := range p.index {
		for sk, grants := range bySrc {
			for _, gi := range grants {
				// Duplicates (one per pair) go below; the index holds
				// at most MaxIndexEntries pairs.
				dst[gi] = append(dst[gi], dk)
				src[gi] = append(src[gi], sk)
			}
		}
	}
	for i := range p.grants {
		slices.SortFunc(src[i], cmpKey)
		src[i] = slices.Compact(src[i])
		slices.SortFunc(dst[i], cmpKey)
		dst[i] = slices.Compact(dst[i])
	}
	return src, dst
}

func cmpKey(a, b nodeKey) int {
	return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.name, b.name))
}

// nodeKeys returns every key n is known by.
func nodeKeys(n *Node) []nodeKey {
	k, ok := validNode(n)
	if !ok {
		return nil
	}
	var out []nodeKey
	for i := 0; ; i++ {
		key, ok := keyAt(n, k, i)
		if !ok {
			return out
		}
		out = append(out, key)
	}
}

func nodeSelector(n *Node) string {
	if n.Name == "" {
		return "user:" + n.User
	}
	return string(n.Kind) + ":" + string(n.Name)
}

// rights lists the rights between the fixed node and every peer; who says
// the fixed node is the destination.
func (p *Policy) rights(fixed Node, q WhoQuery, who bool) []Right {
	if p == nil || p.grantNumbers != nil {
		return nil // a projection has not the whole document's grants
	}
	fixedKeys := nodeKeys(&fixed)
	if fixedKeys == nil {
		return nil
	}
	srcs, dsts := p.grantSides()
	raw, _ := p.decoded()
	groups := rawGroups(raw)
	var out []Right
	for gi := range p.grants {
		mine, theirs := dsts[gi], srcs[gi]
		if !who {
			mine, theirs = srcs[gi], dsts[gi]
		}
		if !slices.ContainsFunc(mine, func(k nodeKey) bool { return slices.Contains(fixedKeys, k) }) {
			continue
		}
		var rawSide []str
		if raw != nil && gi < len(raw.grants) {
			rawSide = raw.grants[gi].src.items
			if !who {
				rawSide = raw.grants[gi].dst.items
			}
		}
		add := func(peer *Node, key nodeKey) {
			r, ok := p.right(gi, fixed, peer, key, q, who)
			if !ok {
				return
			}
			r.Via, r.Member = via(rawSide, groups, key)
			if raw != nil && gi < len(raw.grants) {
				r.OnBehalfOf = describeObo(raw.grants[gi].obo)
			}
			out = append(out, r)
		}
		if q.Nodes == nil {
			for _, k := range theirs {
				add(nil, k)
			}
			continue
		}
		for i := range q.Nodes {
			n := &q.Nodes[i]
			if n.Kind == fixed.Kind && n.Name == fixed.Name && n.User == fixed.User {
				continue
			}
			keys := nodeKeys(n)
			// The most specific key that the grant names: its name, then
			// a tag, then "*".
			best, found := nodeKey{}, false
			for _, k := range theirs {
				if slices.Contains(keys, k) && (!found || rank(k) < rank(best)) {
					best, found = k, true
				}
			}
			if found {
				add(n, best)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Right) int {
		if who {
			return cmp.Or(cmp.Compare(a.Src, b.Src), cmp.Compare(a.Grant, b.Grant))
		}
		return cmp.Or(cmp.Compare(a.Dst, b.Dst), cmp.Compare(a.Grant, b.Grant))
	})
	return out
}

func rank(k nodeKey) int {
	switch k.kind {
	case keyAll:
		return 3
	case keyTag:
		return 2
	case keyUser:
		return 1
	}
	return 0
}

// right builds grant gi's right between fixed and peer (nil: the selector
// key stands for the peer); false when a WhoQuery.Tool filter leaves
// nothing.
func (p *Policy) right(gi int, fixed Node, peer *Node, key nodeKey, q WhoQuery, who bool) (Right, bool) {
	g := &p.grants[gi]
	line, _ := lineColumn(p.doc, g.off)
	r := Right{Grant: gi, Line: line, Connect: g.connOnly()}
	peerSel := key.selector()
	if peer != nil {
		peerSel = nodeSelector(peer)
		r.Tags, r.User = identity.TagStrings(peer.Tags), peer.User
	}
	r.Src, r.Dst = peerSel, nodeSelector(&fixed)
	dst := fixed
	if !who {
		r.Src, r.Dst = nodeSelector(&fixed), peerSel
		if peer != nil {
			dst = *peer
		} else {
			dst = Node{Kind: identity.Kind(strings.SplitN(peerSel, ":", 2)[0])}
			if key.kind == keyTool {
				dst.Name = identity.Name(key.name)
			}
		}
	}
	raw, _ := p.decoded()
	var rg *rawGrant
	if raw != nil && gi < len(raw.grants) {
		rg = &raw.grants[gi]
	}
	patterns := func(k itemKind) []string {
		if rg == nil || rg.lists[k] == nil {
			return nil
		}
		var out []string
		for _, s := range rg.lists[k].items {
			out = append(out, s.s)
		}
		return out
	}
	seen, reported := q.Tools[string(dst.Name)]
	reported = reported && dst.Kind == identity.KindTool
	switch {
	case q.Tool != "":
		if g.lists[itemTool] == nil || !p.matchItem(g, itemTool, q.Tool, &dst) {
			return Right{}, false
		}
		r.Tools = []string{q.Tool}
		r.ToolsSeen = reported && slices.Contains(seen, q.Tool)
	case g.lists[itemTool] != nil && reported:
		r.ToolsSeen = true
		r.Tools = []string{}
		for _, t := range seen {
			if p.matchItem(g, itemTool, t, &dst) {
				r.Tools = append(r.Tools, t)
			}
		}
		slices.Sort(r.Tools)
	default:
		r.Tools = patterns(itemTool)
	}
	if q.Tool == "" {
		r.Resources, r.Prompts, r.Models, r.Paths = patterns(itemResource), patterns(itemPrompt), patterns(itemModel), patterns(itemPath)
	}
	if g.when != nil {
		r.Conditional, r.When = true, g.when.src
	}
	if g.approval != "" {
		r.Approval, r.ApprovalTimeout = g.approval, g.approvalTimeout.String()
	}
	return r, true
}

// rawGroups maps each group to the selectors it expands to, as written
// (nested groups followed); Compile has already refused cycles.
func rawGroups(raw *rawDoc) map[string][]string {
	if raw == nil {
		return nil
	}
	members := make(map[string][]str, len(raw.groups))
	for _, g := range raw.groups {
		members[g.name.s] = g.members.items
	}
	out := make(map[string][]string, len(members))
	var expand func(name string, depth int) []string
	expand = func(name string, depth int) []string {
		if got, ok := out[name]; ok || depth > len(members) {
			return got
		}
		var list []string
		for _, m := range members[name] {
			if strings.HasPrefix(m.s, "group:") {
				list = append(list, expand(m.s, depth+1)...)
			} else {
				list = append(list, m.s)
			}
		}
		out[name] = list
		return list
	}
	for name := range members {
		expand(name, 0)
	}
	return out
}

// via returns the entry of a grant's side list that yields key: the
// selector itself, or the group holding it and the member.
func via(side []str, groups map[string][]string, key nodeKey) (string, string) {
	sel := key.selector()
	for _, s := range side {
		if s.s == sel {
			return sel, ""
		}
	}
	for _, s := range side {
		if slices.Contains(groups[s.s], sel) {
			return s.s, sel
		}
	}
	return sel, ""
}
